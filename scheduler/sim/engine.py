"""The simulation loop: the controller's decide() against simulated GPUs in virtual time.

Every ``step_s`` the engine applies due commands, handles events (budget changes, job
arrivals, node failures and recoveries), runs every GPU through the step with
:class:`~greenllm.devices.simulated.SimulatedGPU` on its own virtual clock (so energy and
work are the exact integrals, duty cycles included), and records telemetry and metrics.
Every ``control_period_s`` it builds the observed state the controller would have and
calls the very same :func:`scheduler.core.decide.decide`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from greenllm.devices import physics
from greenllm.devices.catalog import get_spec
from greenllm.devices.simulated import SimulatedGPU
from scheduler.core.problem import Policy
from scheduler.sim.control import Telemetry
from scheduler.sim.controller import SimController
from scheduler.sim.results import SimResult, TraceWriter, slo_met
from scheduler.sim.scenario import Scenario
from scheduler.sim.workloads import (
    ARRIVAL_EWMA,
    ArrivalStream,
    JobRun,
)

#: Probability that a telemetry reading is an outlier, and its factor.
OUTLIER_P = 0.005
OUTLIER_FACTOR = 2.0

Segments = list[tuple[physics.Workload | None, float]]


class _Clock:
    """One GPU's virtual clock."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Simulation:
    """One run of a scenario under one policy.

    Args:
        scenario: The scenario.
        base_dir: Folder relative paths in the scenario are taken from.
        policy: The allocation policy.
        policy_name: Its name, for the summary.
        unbounded: Ignore the budget (the reference run for ``throughput_vs_unbounded``).
        trace: Where to write trace rows (None: no trace).
        progress: Called with the fraction done now and then.
    """

    def __init__(
        self,
        scenario: Scenario,
        base_dir: Path,
        policy: Policy,
        policy_name: str,
        unbounded: bool = False,
        trace: TraceWriter | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        self.sc = scenario
        self.policy = policy
        self.policy_name = policy_name
        self.trace = trace
        self.progress = progress
        self.plane = scenario.control
        self.rng = np.random.default_rng(scenario.seed)
        self.node_of: list[str] = []
        self.index_of: list[int] = []
        self.types: list[str] = []
        for node in scenario.nodes:
            for name in node.names():
                for i, t in enumerate(node.gpu_types()):
                    self.node_of.append(name)
                    self.index_of.append(i)
                    self.types.append(t)
        n = len(self.types)
        self.gpus_of_node: dict[str, list[int]] = {}
        for i, name in enumerate(self.node_of):
            self.gpus_of_node.setdefault(name, []).append(i)
        self.max_w = np.array([get_spec(t).max_power_limit_w for t in self.types])
        self.min_w = np.array([get_spec(t).min_power_limit_w for t in self.types])
        self.tdp_w = self.max_w.copy()
        self.reserve_w = scenario.budget.reserve_w
        self.budget_w = self._initial_budget(unbounded)
        self.schedule = [] if unbounded else sorted(scenario.budget.schedule, key=lambda c: c.t_s)
        self.clocks = [_Clock() for _ in range(n)]
        start = self._failsafe_w()
        self.gpus = [self._new_gpu(i, start[i]) for i in range(n)]
        self.start_limits_w = start
        self.failed: set[str] = set()
        self.assign: list[str | None] = [None] * n
        self.shard_of: list[int | None] = [None] * n
        self.last_energy_j = np.zeros(n)
        self.last_work = np.zeros(n)
        self.trace_work = np.zeros(n)
        self.runs: dict[str, JobRun] = {}
        for j, job in enumerate(scenario.jobs):
            for c, job_id in enumerate(job.ids()):
                run = JobRun(spec=job, job_id=job_id)
                if job.arrivals is not None:
                    # one stream per job, the same whatever the policy does
                    rng = np.random.default_rng([scenario.seed, j, c])
                    run.arrivals = ArrivalStream(job.arrivals, base_dir, rng)
                self.runs[job_id] = run
        self._op_cache: dict[tuple[str, physics.Workload, float, int], physics.OperatingPoint] = {}
        self.result = SimResult.empty(policy_name, scenario.duration_s, self.runs)
        self.controller = SimController(self, policy)

    # -- set-up helpers -------------------------------------------------------------------
    def _initial_budget(self, unbounded: bool) -> float:
        if unbounded:
            return float(np.sum(self.max_w)) + self.reserve_w
        b = self.sc.budget
        return (
            b.budget_w if b.budget_w is not None else (b.frac_of_tdp or 0.0) * self.sc.sum_tdp_w()
        )

    def _failsafe_w(self) -> np.ndarray:
        usable = self.budget_w - self.reserve_w
        share = usable * self.tdp_w / float(np.sum(self.tdp_w))
        return np.floor(np.clip(share, self.min_w, self.max_w))

    def _new_gpu(self, i: int, limit_w: float) -> SimulatedGPU:
        gpu = SimulatedGPU(self.types[i], self.index_of[i], self.node_of[i], clock=self.clocks[i])
        gpu.set_power_limit_w(float(limit_w))
        return gpu

    def _op(self, i: int, wl: physics.Workload) -> physics.OperatingPoint:
        gpu = self.gpus[i]
        lock = gpu.locked_sm_clocks_mhz()
        lock_max = lock[1] if lock else 0
        key = (self.types[i], wl, gpu.power_limit_w(), lock_max)
        op = self._op_cache.get(key)
        if op is None:
            op = physics.operating_point(gpu.spec, wl, key[2], lock_max or None)
            self._op_cache[key] = op
        return op

    # -- events -----------------------------------------------------------------------------
    def _events(self, t: float) -> None:
        while self.schedule and self.schedule[0].t_s <= t + 1e-9:
            change = self.schedule.pop(0)
            new = change.budget_w or (change.frac_of_tdp or 0.0) * self.sc.sum_tdp_w()
            self.result.budget_change(t, self.budget_w, new)
            self.budget_w = new
        for run in self.runs.values():
            if run.phase == "waiting" and run.spec.arrive_s <= t + 1e-9:
                run.phase = "pending"
        for f in self.sc.failures:
            if abs(f.at_s - t) < self.plane.step_s / 2 and f.node not in self.failed:
                self._fail(f.node)
            if f.recover_s is not None and abs(f.recover_s - t) < self.plane.step_s / 2:
                self._recover(f.node, t)

    def _fail(self, node: str) -> None:
        self.failed.add(node)
        self.controller.view.drop_commands(node)
        hit = {self.assign[i] for i in self.gpus_of_node[node]} - {None}
        for job_id in hit:
            run = self.runs[str(job_id)]
            for i in run.gpus:
                self.assign[i] = None
                self.shard_of[i] = None
            run.unplace()

    def _recover(self, node: str, t: float) -> None:
        """The node reboots; its agent caps every GPU at its minimum limit, then registers."""
        self.failed.discard(node)
        for i in self.gpus_of_node[node]:
            self.clocks[i].t = t
            self.gpus[i] = self._new_gpu(i, self.min_w[i])
            self.last_energy_j[i] = self.gpus[i].energy_j()
            self.last_work[i] = self.gpus[i].work_units()
        self.controller.view.rejoin(node, t)

    # -- control ----------------------------------------------------------------------------
    def _apply_commands(self, t: float) -> None:
        for cmd in self.controller.view.due(t):
            if self.node_of[cmd.gpu] in self.failed:
                continue
            gpu = self.gpus[cmd.gpu]
            self.clocks[cmd.gpu].t = t
            if cmd.kind == "limit":
                gpu.set_power_limit_w(cmd.value)
            elif cmd.kind == "lock":
                gpu.lock_sm_clocks_mhz(gpu.spec.min_sm_clock_mhz, int(cmd.value))
            else:
                gpu.reset_sm_clocks()
            self.controller.view.ack(cmd)

    # -- physics ----------------------------------------------------------------------------
    def _segments(self, t0: float, dt: float) -> tuple[dict[int, Segments], dict[int, float]]:
        segs: dict[int, Segments] = {}
        busy_clock: dict[int, float] = {}
        for run in self.runs.values():
            if run.phase == "pending" and run.arrivals is not None:
                self._arrive(run, t0, dt)
            if run.phase != "running":
                continue
            spec = run.spec
            if spec.kind == "train":
                wl = spec.workload("train", true=True)
                ops = {i: self._op(i, wl) for i in run.gpus}
                pace = min(op.throughput for op in ops.values())
                for i, op in ops.items():
                    frac = pace / op.throughput if op.throughput > 0 else 0.0
                    segs[i] = [(wl, frac * dt), (None, (1 - frac) * dt)]
                    busy_clock[i] = op.sm_clock_mhz
                continue
            self._arrive(run, t0, dt)
            wp, wd = spec.workload("prefill", true=True), spec.workload("decode", true=True)
            for i, q in run.queues.items():
                op_p, op_d = self._op(i, wp), self._op(i, wd)
                pre_s, dec_s, decoded = q.serve(dt, op_p.throughput, op_d.throughput)
                run.served_output_tokens += decoded
                segs[i] = [(wp, pre_s), (wd, dec_s), (None, dt - pre_s - dec_s)]
                busy_clock[i] = op_d.sm_clock_mhz if dec_s > 0 else op_p.sm_clock_mhz
        return segs, busy_clock

    def _arrive(self, run: JobRun, t0: float, dt: float) -> None:
        if run.arrivals is None or (run.spec.end_s is not None and t0 >= run.spec.end_s):
            return
        prompt, output = run.arrivals.take(t0, t0 + dt)
        run.arrival_ewma_tps += ARRIVAL_EWMA * dt * (output / dt - run.arrival_ewma_tps)
        run.route(prompt, output)

    def _run_gpus(self, t0: float, dt: float) -> Telemetry:
        n = len(self.types)
        segs, busy_clock = self._segments(t0, dt)
        alive = np.array([node not in self.failed for node in self.node_of], dtype=bool)
        power = np.zeros(n)
        work = np.zeros(n)
        clock = np.zeros(n)
        limit = np.zeros(n)
        steady = np.zeros(n, dtype=bool)
        for i in np.flatnonzero(alive).tolist():
            gpu, clk = self.gpus[i], self.clocks[i]
            clk.t = t0
            plan = segs.get(i, [(None, dt)])
            for wl, d in plan:
                if d <= 1e-12:
                    continue
                if gpu.workload != wl:
                    gpu.set_workload(wl)
                clk.t += d
            clk.t = t0 + dt
            energy, units = gpu.energy_j(), gpu.work_units()
            power[i] = (energy - self.last_energy_j[i]) / dt
            work[i] = units - self.last_work[i]
            self.last_energy_j[i], self.last_work[i] = energy, units
            clock[i] = busy_clock.get(i, gpu.spec.min_sm_clock_mhz)
            limit[i] = gpu.power_limit_w()
            steady[i] = plan[0][0] is not None and plan[0][1] >= dt - 1e-9
        for i in np.flatnonzero(alive).tolist():
            job_id = self.assign[i]
            if job_id is not None:
                run = self.runs[job_id]
                run.work_units += work[i]
                run.energy_j += power[i] * dt
                if run.spec.kind == "train":
                    run.samples_done += work[i]
        self._record(t0 + dt, dt, alive, power, work, clock, limit)
        noise = self.plane.power_noise_frac
        jitter_p = 1.0 + noise * self.rng.standard_normal(n)
        jitter_w = 1.0 + noise * self.rng.standard_normal(n)
        outlier = np.where(self.rng.random(n) < OUTLIER_P, OUTLIER_FACTOR, 1.0)
        return Telemetry(
            produced_s=t0 + dt,
            alive=alive,
            power_w=power * jitter_p * outlier,
            work_rate=work / dt * jitter_w,
            sm_clock_mhz=clock,
            limit_w=limit,
            steady=steady,
        )

    def _record(
        self,
        t: float,
        dt: float,
        alive: np.ndarray,
        power: np.ndarray,
        work: np.ndarray,
        clock: np.ndarray,
        limit: np.ndarray,
    ) -> None:
        cluster_w = float(np.sum(power[alive]))
        self.result.step(t, dt, cluster_w, self.budget_w)
        if self.trace is None:
            return
        self.trace_work += work
        if not self.trace.due():
            return
        for i in range(len(self.types)):
            job = self.assign[i] or ""
            lim = limit[i] if alive[i] else self.gpus[i].power_limit_w()
            self.trace.row(
                t,
                self.node_of[i],
                self.index_of[i],
                self.types[i],
                job,
                lim,
                clock[i],
                power[i],
                self.trace_work[i],
            )
        self.trace_work[:] = 0.0

    def _progress_jobs(self, t: float, dt: float) -> None:
        for run in self.runs.values():
            if run.phase != "running":
                continue
            run.running_s += dt
            spec = run.spec
            finished = spec.kind == "train" and (
                spec.total_samples is not None and run.samples_done >= spec.total_samples
            )
            if spec.kind == "infer" and spec.end_s is not None and t >= spec.end_s:
                finished = run.backlog_output_tokens() < 1e-3
            if finished:
                run.phase = "done"
                run.finished_s = t
                for i in run.gpus:
                    self.assign[i] = None
                    self.shard_of[i] = None

    # -- main loop -----------------------------------------------------------------------------
    def run(self) -> SimResult:
        """Simulate the whole scenario; returns the metrics."""
        dt = self.plane.step_s
        steps = math.ceil(self.sc.duration_s / dt - 1e-9)
        per_control = round(self.plane.control_period_s / dt)
        self.result.budget_change(0.0, None, self.budget_w)
        report_every = max(1, steps // 20)
        for k in range(steps):
            t = k * dt
            self._events(t)
            self._apply_commands(t)
            if k % per_control == 0:
                self.controller.control(t, self.budget_w)
            self.controller.view.send_telemetry(self._run_gpus(t, dt))
            self._progress_jobs(t + dt, dt)
            if self.progress is not None and (k + 1) % report_every == 0:
                self.progress((k + 1) / steps)
        self.result.finish(self.runs, slo_met(self.runs, self.sc.duration_s))
        return self.result
