"""One step of physics: every simulated GPU runs what the world gives it, and the world books
the work and energy that came of it (exact integrals of the calibrated model).

Work is counted in the units the live cluster counts: training samples, and for inference
the output tokens generated (prefill works through prompt tokens, which are not units).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from greenllm.devices import physics
from greenllm.serving.chunking import step_token_budget
from greenllm.shard_state import ShardState
from scheduler.sim.nodes import SimGPU, SimNode
from scheduler.sim.world import JobModel, Segments, ShardModel, World

OpKey = tuple[str, physics.Workload, float, int]


@dataclass(frozen=True)
class StepReadings:
    """What every GPU did in one step, in the simulation's GPU order.

    Attributes:
        power_w: Mean power over the step, watts (0 on a node that is down).
        work: Units of work done in the step.
        sm_clock_mhz: SM clock while busy (or idle clock), MHz.
        limit_w: Power limit at the end of the step, watts.
        job: The name of the job whose shard ran on it ("" when idle).
        held: Whether a job held it (its books pay for it): a training rank, or an
            inference replica serving or finishing what it holds; a drained (parked) one's
            GPU is back with the cluster, its energy the cluster's idle energy.
    """

    power_w: np.ndarray
    work: np.ndarray
    sm_clock_mhz: np.ndarray
    limit_w: np.ndarray
    job: list[str]
    held: np.ndarray


class Physics:
    """Steps the GPUs of every node through the world's workloads.

    Args:
        nodes: The nodes, in order.
        world: The workloads.
    """

    def __init__(self, nodes: list[SimNode], world: World) -> None:
        self.nodes = nodes
        self.world = world
        self.gpus: list[tuple[SimNode, int]] = [(n, i) for n in nodes for i in range(len(n.gpus))]
        self._ops: dict[OpKey, physics.OperatingPoint] = {}
        self._energy = np.array([g.energy_j() for n in nodes for g in n.gpus])
        self._work = np.array([g.work_units() for n in nodes for g in n.gpus])

    def _op(self, gpu: SimGPU, wl: physics.Workload) -> physics.OperatingPoint:
        lock = gpu.locked_sm_clocks_mhz()
        key = (gpu.gpu_type, wl, gpu.power_limit_w(), lock[1] if lock else 0)
        op = self._ops.get(key)
        if op is None:
            op = self._ops[key] = physics.operating_point(gpu.spec, wl, key[2], key[3] or None)
        return op

    def _gpu(self, s: ShardModel) -> SimGPU:
        return self._node(s.node).gpus[s.gpu_index]

    def _node(self, name: str) -> SimNode:
        return self._by_name[name]

    def _train(
        self,
        job: JobModel,
        shards: list[ShardModel],
        dt: float,
        segs: dict[int, Segments],
        clocks: dict[int, float],
        pos: dict[tuple[str, int], int],
    ) -> None:
        spec = job.spec
        total = spec.sim.total_samples
        done = total is not None and job.samples_done >= total - 1e-9
        ready = len(shards) == spec.shards and all(s.state is ShardState.RUNNING for s in shards)
        if done or not ready:
            return
        wl = spec.true_workload("train")
        ops = [self._op(self._gpu(s), wl) for s in shards]
        rates = np.array([op.throughput for op in ops])
        shares = np.array([max(0.0, job.weights.get(s.shard_id, 0.0)) for s in shards])
        if not (shares > 0).all():  # no (or incomplete) micro-batch shares: equal ones
            shares = np.ones(len(shards))
        shares = shares / shares.sum()
        # a step takes as long as its slowest share: max(share_i / rate_i) per sample
        job_rate = float(np.min(rates / shares)) if (rates > 0).all() else 0.0
        if total is not None:
            job_rate = min(job_rate, (total - job.samples_done) / dt)
        for s, op, share in zip(shards, ops, shares.tolist(), strict=True):
            frac = min(1.0, share * job_rate / op.throughput) if op.throughput > 0 else 0.0
            i = pos[(s.node, s.gpu_index)]
            segs[i] = [(wl, frac * dt), (None, (1 - frac) * dt)]
            clocks[i] = op.sm_clock_mhz
        job.running_s += dt

    def _infer(
        self,
        job: JobModel,
        shards: list[ShardModel],
        t: float,
        dt: float,
        segs: dict[int, Segments],
        clocks: dict[int, float],
        pos: dict[tuple[str, int], int],
        output: dict[int, float],
    ) -> None:
        self.world.arrive(job, t, dt, shards)
        spec = job.spec
        wp = spec.true_workload("prefill")
        wd = spec.true_workload("decode")
        for s in shards:
            if s.state != "running":
                continue
            gpu = self._gpu(s)
            if s.replica.token_budget is None:
                s.replica.token_budget = step_token_budget(
                    gpu.spec.memory_mib, spec.infer_settings.max_num_batched_tokens
                )

            def decode(b: int, wd: physics.Workload = wd) -> physics.Workload:
                return replace(wd, batch=b)

            segments, tokens = s.replica.serve(
                t,
                dt,
                lambda gpu=gpu: self._op(gpu, wp).throughput,  # type: ignore[misc]
                lambda b, gpu=gpu: self._op(gpu, decode(b)).throughput,  # type: ignore[misc]
                wp,
                decode,
            )
            for f in s.replica.done:
                job.served_output_tokens += f.tokens
            job.finished.extend(s.replica.done)
            s.finished(t + dt, s.replica.done)
            s.replica.done.clear()
            i = pos[(s.node, s.gpu_index)]
            segs[i] = segments
            output[i] = tokens
            busy = [wl for wl, d in segments if wl is not None and d > 0]
            clocks[i] = self._op(gpu, busy[-1]).sm_clock_mhz if busy else gpu.spec.min_sm_clock_mhz
        if shards:
            job.running_s += dt

    def step(self, t: float, dt: float) -> StepReadings:
        """Run every GPU from ``t`` to ``t + dt``; returns what each did."""
        self._by_name = {n.name: n for n in self.nodes}
        pos = {(n.name, i): k for k, (n, i) in enumerate(self.gpus)}
        segs: dict[int, Segments] = {}
        clocks: dict[int, float] = {}
        output: dict[int, float] = {}  # inference GPUs: output tokens generated
        for job in self.world.jobs.values():
            shards = self.world.current_shards(job)
            if job.spec.kind == "train":
                self._train(job, shards, dt, segs, clocks, pos)
            elif job.arrivals is not None:
                self._infer(job, shards, t, dt, segs, clocks, pos, output)
        n = len(self.gpus)
        power, work, clock, limit = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
        held = np.zeros(n, dtype=bool)
        jobs = [""] * n
        for k, (node, i) in enumerate(self.gpus):
            gpu = node.gpus[i]
            limit[k] = gpu.power_limit_w()
            if not node.up:
                continue
            clk = node.clocks[i]
            clk.t_s = t
            for wl, d in segs.get(k, [(None, dt)]):
                if d <= 1e-12:
                    continue
                if gpu.workload != wl:
                    gpu.set_workload(wl)
                clk.t_s += d
            clk.t_s = t + dt
            energy, units = gpu.energy_j(), gpu.work_units()
            power[k] = (energy - self._energy[k]) / dt
            work[k] = output.get(k, units - self._work[k])
            self._energy[k], self._work[k] = energy, units
            clock[k] = clocks.get(k, gpu.spec.min_sm_clock_mhz)
            shard = self.world.on_gpu.get((node.name, i))
            if shard is not None:
                job = self.world.jobs[shard.job_id]
                jobs[k] = job.name
                shard.work_units += work[k]
                job.work_units += work[k]
                held[k] = job.spec.kind == "train" or self.world.serving(job, shard)
                if held[k]:
                    job.energy_j += power[k] * dt
                if job.spec.kind == "train":
                    job.samples_done += work[k]
        return StepReadings(power, work, clock, limit, jobs, held)

    def rebase(self, node: SimNode) -> None:
        """A node's GPUs were reset (a reboot): their counters start again from here."""
        for k, (n, i) in enumerate(self.gpus):
            if n is node:
                self._energy[k] = n.gpus[i].energy_j()
                self._work[k] = n.gpus[i].work_units()
