"""The controller inside the simulator: what it observes, decide(), and carrying out actions.

It sees only what a live controller would: delayed, noisy telemetry, acks as they arrive,
stale and down nodes. It feeds settled training telemetry to its power model and runs
the very same :func:`scheduler.core.decide.decide`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from scheduler.core.decide import decide
from scheduler.core.powermodel import PowerModel
from scheduler.core.problem import Policy
from scheduler.core.types import Actions, DecideConfig, GPUState, JobState, ObservedState
from scheduler.sim.control import ControllerView, Telemetry
from scheduler.sim.workloads import DEMAND_HEADROOM, JobRun, ReplicaQueue

if TYPE_CHECKING:
    from scheduler.sim.engine import Simulation

#: Training samples fed to the power model per control period, at most.
LEARN_SAMPLES = 64


class SimController:
    """The controller of one simulation (shares the engine's job and GPU bookkeeping)."""

    def __init__(self, sim: Simulation, policy: Policy) -> None:
        self.sim = sim
        self.policy = policy
        self.model = PowerModel()
        self.config = DecideConfig()
        self.key_to_gpu = {
            key: i for i, key in enumerate(zip(sim.node_of, sim.index_of, strict=True))
        }
        self.view = ControllerView(
            sim.plane,
            sim.node_of,
            sim.start_limits_w,
            sim.min_w,
            np.random.default_rng([sim.sc.seed, 1 << 20]),
        )

    def job_state(self, run: JobRun, t: float) -> JobState:
        """The job as decide() sees it (SLO rate from a deadline; inference demand)."""
        spec = run.spec
        if spec.kind == "train":
            workload = spec.workload("train")
            slo = spec.slo_samples_per_s
            if spec.deadline_s is not None and spec.total_samples is not None:
                left_s = max(spec.deadline_s - t, self.sim.plane.control_period_s)
                slo = max(slo, (spec.total_samples - run.samples_done) / left_s)
            demand = None
        else:
            workload = spec.workload("decode")
            demand = run.demand_tps()
            slo = min(DEMAND_HEADROOM * spec.slo_tokens_per_s, demand)
        return JobState(
            job_id=run.job_id,
            kind=spec.kind,
            phase="running" if run.phase == "running" else "pending",
            workload=workload,
            shards=spec.shards,
            priority=spec.priority,
            allowed_gpu_types=tuple(spec.allowed_gpu_types),
            preferred_gpu_types=tuple(spec.preferred_gpu_types),
            slo_units_per_s=slo,
            floor_w=spec.floor_w,
            demand_units_per_s=demand,
        )

    def observe(self, t: float, budget_w: float) -> ObservedState:
        """The observed state at ``t`` from delivered telemetry and acks."""
        for sample in self.view.receive(t):
            self.learn(sample)
        stale = self.view.node_health(t)
        tele = self.view.latest
        gpus = []
        for i in range(len(self.sim.types)):
            node = self.sim.node_of[i]
            gpus.append(
                GPUState(
                    node=node,
                    index=self.sim.index_of[i],
                    gpu_type=self.sim.types[i],
                    power_w=float(tele.power_w[i]) if tele is not None else 0.0,
                    sm_clock_mhz=float(tele.sm_clock_mhz[i]) if tele is not None else 0.0,
                    acked_limit_w=float(self.view.acked_w[i]),
                    pending_limit_w=self.view.pending_w(i),
                    locked_max_sm_clock_mhz=self.view.locked[i],
                    stale=node in stale,
                    job_id=self.sim.assign[i],
                    shard=self.sim.shard_of[i],
                    work_rate=float(tele.work_rate[i]) if tele is not None else 0.0,
                )
            )
        jobs = tuple(
            self.job_state(r, t)
            for r in self.sim.runs.values()
            if r.phase in ("pending", "running")
        )
        return ObservedState(t, budget_w, self.sim.reserve_w, tuple(gpus), jobs, self.model)

    def learn(self, sample: Telemetry) -> None:
        """Feed settled training readings to the power model."""
        rows = np.flatnonzero(sample.steady)
        if rows.size > LEARN_SAMPLES:
            rows = self.sim.rng.choice(rows, LEARN_SAMPLES, replace=False)
        for i in rows.tolist():
            job_id = self.sim.assign[i]
            if job_id is None or self.view.outstanding[i]:
                continue
            spec = self.sim.runs[job_id].spec
            if spec.kind != "train":
                continue
            self.model.observe(
                self.sim.types[i],
                spec.workload("train"),
                float(sample.limit_w[i]),
                self.view.locked[i],
                float(sample.power_w[i]),
                float(sample.work_rate[i]),
            )

    def control(self, t: float, budget_w: float) -> None:
        """One control period: observe, decide, carry out."""
        observed = self.observe(t, budget_w)
        start = time.process_time()
        actions = decide(observed, self.config, self.policy)
        self.sim.result.decide_cpu_s.append(time.process_time() - start)
        self.execute(actions, t)

    def execute(self, actions: Actions, t: float) -> None:
        """Start shards, send commands, set load weights."""
        key_to_gpu = self.key_to_gpu
        by_job: dict[str, list[tuple[int, int]]] = {}
        for p in actions.placements:
            by_job.setdefault(p.job_id, []).append((p.shard, key_to_gpu[(p.node, p.index)]))
        for job_id, shards in by_job.items():
            run = self.sim.runs[job_id]
            if any(self.sim.node_of[i] in self.sim.failed or self.sim.assign[i] for _, i in shards):
                continue
            run.phase = "running"
            run.gpus = [i for _, i in shards]
            for shard, i in shards:
                self.sim.assign[i] = job_id
                self.sim.shard_of[i] = shard
            if run.spec.kind == "infer":
                run.queues = {i: ReplicaQueue() for i in run.gpus}
        for c in actions.power_limits:
            self.view.send(t, key_to_gpu[(c.node, c.index)], "limit", c.power_limit_w)
        for lk in actions.clock_locks:
            self.view.send(t, key_to_gpu[(lk.node, lk.index)], "lock", lk.max_sm_clock_mhz)
        for r in actions.clock_resets:
            self.view.send(t, key_to_gpu[(r.node, r.index)], "reset")
        for w in actions.load_weights:
            run = self.sim.runs[w.job_id]
            run.weights[key_to_gpu[(w.node, w.index)]] = w.weight
        self.sim.result.unmet_slo_reports.update({s.job_id: s.reason for s in actions.unmet_slos})
