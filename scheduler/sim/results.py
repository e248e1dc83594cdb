"""Simulation results and the output files (the contract in DESIGN.md).

``trace.csv``: one row per GPU per recorded tick, header exactly
``t,node,gpu,gpu_type,job,power_limit_w,sm_clock_mhz,power_w,work``. ``budget.csv``:
``t,budget_w``, one row per change. ``summary.json``: ``policy``, ``duration_s``,
``energy_j``, ``work``, ``joules_per_unit``, ``budget_violation_s``, ``max_overshoot_w``,
``slo_met``, ``throughput_vs_unbounded`` and more.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from scheduler.sim.scenario import Scenario, ScenarioJob
from scheduler.sim.world import JobModel

TRACE_HEADER = [
    "t",
    "node",
    "gpu",
    "gpu_type",
    "job",
    "power_limit_w",
    "sm_clock_mhz",
    "power_w",
    "work",
]
BUDGET_HEADER = ["t", "budget_w"]
#: Share of the offered (or SLO) output tokens an inference job must serve to meet its SLO.
INFER_SLO_SHARE = 0.95
#: Share of its SLO rate a training job must average.
TRAIN_SLO_SHARE = 0.99
#: How a job without an SLO is judged (met; tables show "n/a").
NO_SLO = "no SLO"


class TraceWriter:
    """Writes ``trace.csv`` (LF line ends), keeping every ``every``-th tick; the work of the
    ticks in between is summed into the kept ones, and a last partial interval is written
    when the file is closed, so the trace's work adds up to the summary's."""

    def __init__(self, path: Path, every: int = 1) -> None:
        self._fh: IO[str] = path.open("w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._fh, lineterminator="\n")
        self._csv.writerow(TRACE_HEADER)
        self._every = max(1, every)
        self._tick = 0
        self._work: np.ndarray | None = None
        self._last: tuple[float, list[tuple[Any, int]], Any] | None = None

    def record(self, t: float, gpus: list[tuple[Any, int]], readings: Any) -> None:
        """One tick of every GPU (``gpus``: (node, index) pairs; ``readings``: what each did)."""
        self._work = readings.work.copy() if self._work is None else self._work + readings.work
        self._tick += 1
        self._last = (t, gpus, readings)
        if self._tick % self._every == 0:
            self._write()

    def _write(self) -> None:
        assert self._last is not None and self._work is not None
        t, gpus, r = self._last
        for k, (node, i) in enumerate(gpus):
            self._csv.writerow(
                [
                    f"{t:.3f}",
                    node.name,
                    i,
                    node.gpu_types[i],
                    r.job[k],
                    f"{r.limit_w[k]:.3f}",
                    f"{r.sm_clock_mhz[k]:.0f}",
                    f"{r.power_w[k]:.3f}",
                    f"{self._work[k]:.6g}",
                ]
            )
        self._work = None

    def close(self) -> None:
        """Write a last partial interval, then flush and close the file."""
        if self._work is not None and self._last is not None:
            self._write()
        self._fh.close()


def slo_met(
    jobs: Iterable[JobModel], sc: Scenario, why_not_placed: dict[str, str] | None = None
) -> dict[str, tuple[bool, str]]:
    """Per job, whether its SLO was met and how it was judged (a job that never ran did not
    meet it, whatever its SLO; ``why_not_placed`` gives the controller's reason by name)."""
    out: dict[str, tuple[bool, str]] = {}
    for job in jobs:
        spec = job.spec
        name = job.name
        if job.work_units <= 0 and job.running_s <= 0:
            why = (why_not_placed or {}).get(name, "never placed (no GPUs free for it)")
            out[name] = (False, f"never ran: {why}")
            continue
        if spec.kind == "train":
            total = spec.sim.total_samples
            if spec.slo.deadline_s > 0 and total is not None:
                deadline_s = job.submitted_s + spec.slo.deadline_s
                ok = job.finished_s is not None and job.finished_s <= deadline_s + 1e-9
                out[name] = (ok, f"finish {total:g} samples by {deadline_s:g} s")
            elif spec.slo.min_throughput > 0:
                rate = float(job.samples_done / job.running_s) if job.running_s > 0 else 0.0
                ok = bool(rate >= TRAIN_SLO_SHARE * spec.slo.min_throughput)
                out[name] = (ok, f"averaged {rate:.4g} of {spec.slo.min_throughput:g} samples/s")
            else:
                out[name] = (True, NO_SLO)
            continue
        out[name] = _infer_slo(job, sc)
    return out


def _infer_slo(job: JobModel, sc: Scenario) -> tuple[bool, str]:
    slo = job.spec.slo
    checks: list[tuple[bool, str]] = []
    if slo.min_throughput > 0:
        load = job.spec.infer_settings.load
        end = min(job.submitted_s + load.duration_s, sc.duration_s)
        active_s = max(0.0, end - job.submitted_s)
        owed = min(job.offered_output_tokens, slo.min_throughput * active_s)
        ok = bool(job.served_output_tokens >= INFER_SLO_SHARE * owed)
        checks.append(
            (ok, f"served {job.served_output_tokens:.4g} of {owed:.4g} output tokens owed")
        )
    for target, measured, what in (
        (slo.p99_ttft_s, p99(f.ttft_s for f in job.finished), "p99 TTFT"),
        (slo.p99_tpot_s, p99(f.tpot_s for f in job.finished), "p99 TPOT"),
    ):
        if target > 0:
            ok = bool(measured is not None and measured <= target)
            shown = "no request finished" if measured is None else f"{measured:.3g} s"
            checks.append((ok, f"{what} {shown} (SLO {target:g} s)"))
    if not checks:
        return (True, NO_SLO)
    return (all(ok for ok, _ in checks), "; ".join(why for _, why in checks))


def p99(values: Iterable[float]) -> float | None:
    """The 99th percentile of ``values`` (None: none)."""
    arr = np.fromiter(values, dtype=float)
    return float(np.percentile(arr, 99)) if arr.size else None


@dataclass
class Allowance:
    """The most a budget (the cluster's, or a power domain's) allows at each time, its
    transitions included: a change may take ``window_s`` to reach the GPUs, a controller
    outage holds a transition open, and a change made before the agents are back runs one
    window once they have reconnected.

    Attributes:
        changes: ``(time s, watts)`` of each change, in time order.
    """

    changes: list[tuple[float, float]]
    #: Transitions restarted by a controller: (until, watts allowed until then).
    _holds: list[tuple[float, float]] = field(default_factory=list)
    #: After a controller start: until when its agents may still be reconnecting, and
    #: until when a cut made meanwhile may be in transition, seconds.
    _reconnecting: tuple[float, float] = (0.0, 0.0)
    #: While no controller runs: the most allowed when it died, watts.
    _down_allowed_w: float | None = None

    def change(self, t: float, old_w: float | None, new_w: float) -> None:
        """The budget becomes ``new_w`` at ``t``."""
        self.changes.append((t, new_w))
        reconnect_until_s, hold_until_s = self._reconnecting
        if old_w is not None and new_w < old_w and t < reconnect_until_s:
            self._holds.append((hold_until_s, old_w))  # agents may not be back to carry it out

    def down(self, t: float, window_s: float) -> None:
        """No controller runs from ``t``."""
        self._down_allowed_w = self.allowed_w(t, window_s)

    def up(self, t: float, reconnect_s: float, window_s: float) -> None:
        """A controller runs again from ``t``; its agents are back within ``reconnect_s``."""
        self._reconnecting = (t + reconnect_s, t + reconnect_s + window_s)
        if self._down_allowed_w is None:
            return
        if self.changes and self._down_allowed_w > self.changes[-1][1]:
            self._holds.append((t + reconnect_s + window_s, self._down_allowed_w))
        self._down_allowed_w = None

    def allowed_w(self, t: float, window_s: float) -> float:
        """The highest budget in force during the last ``window_s`` seconds, or held by a
        transition a controller outage interrupted, watts."""
        allowed = self._down_allowed_w or 0.0
        allowed = max([allowed, *(w for until_s, w in self._holds if t < until_s)])
        for at_s, watts in reversed(self.changes):
            allowed = max(allowed, watts)
            if at_s <= t - window_s:
                break
        return allowed


@dataclass
class SimResult:
    """Everything a run measured.

    ``budget_violation_s`` / ``max_overshoot_w`` count every step whose measured power was
    over the budget, the transition after a cut included; the ``*_after_transition`` figures
    leave out the first ``transition_window_s`` after each budget change.
    ``limits_over_budget_s`` / ``max_limits_over_budget_w``: steps outside those windows where
    the limits the GPUs really held summed above budget - reserve (the safety invariant);
    ``domain_limits_over_s`` / ``max_domain_limits_over_w`` (per domain) the same for each
    power domain's limit - reserve (with the same window after a change of a domain's
    limit). A
    budget change is carried out by a running controller: a window that a controller outage
    interrupts lasts the outage and starts over when a controller runs again; it, and a change
    made before the agents are back, run one window once they have reconnected.
    """

    policy: str
    duration_s: float
    units: dict[str, str]
    priority: dict[str, float]
    energy_j: float = 0.0
    budget_violation_s: float = 0.0
    max_overshoot_w: float = 0.0
    violation_after_transition_s: float = 0.0
    max_overshoot_after_transition_w: float = 0.0
    limits_over_budget_s: float = 0.0
    max_limits_over_budget_w: float = 0.0
    transition_window_s: float = 0.0
    domain_limits_over_s: float = 0.0
    max_domain_limits_over_w: dict[str, float] = field(default_factory=dict)
    times_s: list[float] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)
    budget_w: list[float] = field(default_factory=list)
    limits_w: list[float] = field(default_factory=list)
    budget_changes: list[tuple[float, float]] = field(default_factory=list)
    cut_response_s: list[float] = field(default_factory=list)
    decide_cpu_s: list[float] = field(default_factory=list)
    work: dict[str, float] = field(default_factory=dict)
    job_energy_j: dict[str, float] = field(default_factory=dict)
    idle_energy_j: dict[str, float] = field(default_factory=dict)
    releasable_s: dict[str, float] = field(default_factory=dict)
    held_gpus: list[int] = field(default_factory=list)
    slo: dict[str, tuple[bool, str]] = field(default_factory=dict)
    unmet_slo_reports: dict[str, str] = field(default_factory=dict)
    p99_ttft_s: dict[str, float | None] = field(default_factory=dict)
    p99_tpot_s: dict[str, float | None] = field(default_factory=dict)
    _open_cut: tuple[float, float] | None = None
    #: What the budget allows over time, transitions included.
    _budget: Allowance = field(default_factory=lambda: Allowance([]))
    #: The same per power domain (by name).
    _domains: dict[str, Allowance] = field(default_factory=dict)
    #: GPU rows of each node, in the simulation's GPU order.
    _node_of: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def empty(cls, policy: str, duration_s: float, jobs: Iterable[ScenarioJob]) -> SimResult:
        """A result to fill in, with every job of the scenario."""
        units: dict[str, str] = {}
        priority: dict[str, float] = {}
        for job in jobs:
            for name in job.ids():
                units[name] = "samples" if job.kind == "train" else "tokens"
                priority[name] = float(job.priority)
        result = cls(policy, duration_s, units, priority)
        result.work = dict.fromkeys(units, 0.0)
        result.job_energy_j = dict.fromkeys(units, 0.0)
        return result

    def budget_change(self, t: float, old_w: float | None, new_w: float) -> None:
        """Record a budget change (a cut opens a response-time measurement)."""
        self.budget_changes.append((t, new_w))
        self._budget.change(t, old_w, new_w)
        if old_w is not None and new_w < old_w:
            self._open_cut = (t, new_w)

    def track_domains(self, names: Sequence[str], usable_w: Sequence[float]) -> None:
        """Start tracking the power domains' usable watts (limit - reserve) at time 0."""
        for name, watts in zip(names, usable_w, strict=True):
            self._domains[name] = Allowance([(0.0, watts)])

    def domain_change(self, t: float, name: str, old_w: float, new_w: float) -> None:
        """Record a change of a power domain's usable watts (limit - reserve)."""
        self._domains[name].change(t, old_w, new_w)

    def controller_down(self, t: float, window_s: float) -> None:
        """The controller died at ``t``: a budget change it acknowledged but had not yet
        carried out stays in transition until a controller runs again."""
        for allowance in (self._budget, *self._domains.values()):
            allowance.down(t, window_s)

    def controller_up(self, t: float, reconnect_s: float, window_s: float) -> None:
        """A controller runs again from ``t``; its agents are back within ``reconnect_s``.
        A transition the outage interrupted, or a cut made before the agents are back, is
        carried out once they are, within one ``window_s``."""
        for allowance in (self._budget, *self._domains.values()):
            allowance.up(t, reconnect_s, window_s)

    def step(
        self,
        t: float,
        dt: float,
        readings: Any,
        budget_w: float,
        real_limits_w: float,
        reserve_w: float,
        window_s: float,
        up: list[bool],
    ) -> None:
        """Record one step: measured cluster power, and the limits really held."""
        cluster_w = float(np.sum(readings.power_w[np.asarray(up, dtype=bool)])) if up else 0.0
        self._idle(readings, dt)
        self.transition_window_s = window_s
        self.energy_j += cluster_w * dt
        self.times_s.append(t)
        self.power_w.append(cluster_w)
        self.budget_w.append(budget_w)
        self.limits_w.append(real_limits_w)
        allowed_w = self._budget.allowed_w(t, window_s)
        if cluster_w > budget_w + 1e-6:
            self.budget_violation_s += dt
            self.max_overshoot_w = max(self.max_overshoot_w, cluster_w - budget_w)
        if cluster_w > allowed_w + 1e-6:
            self.violation_after_transition_s += dt
            self.max_overshoot_after_transition_w = max(
                self.max_overshoot_after_transition_w, cluster_w - allowed_w
            )
        if real_limits_w > allowed_w - reserve_w + 1e-6:
            self.limits_over_budget_s += dt
            self.max_limits_over_budget_w = max(
                self.max_limits_over_budget_w, real_limits_w - allowed_w + reserve_w
            )
        if self._open_cut is not None and cluster_w <= self._open_cut[1] + 1e-6:
            self.cut_response_s.append(t - self._open_cut[0])
            self._open_cut = None

    def domain_step(
        self,
        t: float,
        dt: float,
        names: Sequence[str],
        held_w: Sequence[float],
        window_s: float,
    ) -> None:
        """Record the power domains' side of the invariant for one step: the limits the
        GPUs under each domain really held against its limit - reserve (the highest in
        force over the transition window after a change of it), watts."""
        over = False
        for name, held in zip(names, held_w, strict=True):
            usable = self._domains[name].allowed_w(t, window_s)
            if held > usable + 1e-6:
                over = True
                worst = self.max_domain_limits_over_w.get(name, 0.0)
                self.max_domain_limits_over_w[name] = max(worst, held - usable)
        if over:
            self.domain_limits_over_s += dt

    def _idle(self, readings: Any, dt: float) -> None:
        """Energy of the GPUs no job held, per node; time each node had no GPU held."""
        if not self._node_of:
            return
        self.held_gpus.append(int(np.sum(readings.held)))
        idle_j = np.where(readings.held, 0.0, readings.power_w * dt)
        for node, rows in self._node_of.items():
            self.idle_energy_j[node] = self.idle_energy_j.get(node, 0.0) + float(
                np.sum(idle_j[rows])
            )
            if not readings.held[rows].any():
                self.releasable_s[node] = self.releasable_s.get(node, 0.0) + dt

    def nodes(self, gpu_nodes: list[str]) -> None:
        """The node of each GPU, in the simulation's GPU order."""
        order: dict[str, list[int]] = {}
        for k, node in enumerate(gpu_nodes):
            order.setdefault(node, []).append(k)
        self._node_of = {n: np.asarray(rows, dtype=int) for n, rows in order.items()}
        self.idle_energy_j = dict.fromkeys(order, 0.0)
        self.releasable_s = dict.fromkeys(order, 0.0)

    def finish(self, jobs: Iterable[JobModel], slo: dict[str, tuple[bool, str]]) -> None:
        """Take the per-job totals."""
        for job in jobs:
            self.work[job.name] = job.work_units
            self.job_energy_j[job.name] = job.energy_j
            if job.spec.kind == "infer":
                self.p99_ttft_s[job.name] = p99(f.ttft_s for f in job.finished)
                self.p99_tpot_s[job.name] = p99(f.tpot_s for f in job.finished)
        for name in self.units:
            slo.setdefault(name, (False, "never submitted before the scenario ended"))
        self.slo = slo

    def joules_per_unit(self) -> dict[str, float]:
        """Per job, its GPUs' energy per unit of its work, joules (inf: no work)."""
        return {j: (self.job_energy_j[j] / w if w > 0 else math.inf) for j, w in self.work.items()}

    def summary(self, unbounded: SimResult | None) -> dict[str, Any]:
        """The summary.json document."""
        ref = unbounded.work if unbounded is not None else {}
        vs = {j: (w / ref[j] if ref.get(j, 0) > 0 else None) for j, w in self.work.items()}
        return {
            "policy": self.policy,
            "duration_s": self.duration_s,
            "energy_j": self.energy_j,
            "work": self.work,
            "units": self.units,
            "unit_notes": {
                "tokens": "output tokens generated (as the live cluster counts them)",
                "samples": "training samples",
            },
            "joules_per_unit": self.joules_per_unit(),
            "idle_energy_j": sum(self.idle_energy_j.values()),
            "idle_energy_by_node_j": self.idle_energy_j,
            "releasable_s": self.releasable_s,
            "budget_violation_s": self.budget_violation_s,
            "max_overshoot_w": self.max_overshoot_w,
            "transition_window_s": self.transition_window_s,
            "budget_violation_after_transition_s": self.violation_after_transition_s,
            "max_overshoot_after_transition_w": self.max_overshoot_after_transition_w,
            "limits_over_budget_s": self.limits_over_budget_s,
            "max_limits_over_budget_w": self.max_limits_over_budget_w,
            "domain_limits_over_s": self.domain_limits_over_s,
            "max_domain_limits_over_w": self.max_domain_limits_over_w,
            "slo_met": {j: ok for j, (ok, _) in self.slo.items()},
            "slo_detail": {j: why for j, (_, why) in self.slo.items()},
            "unmet_slo_reports": self.unmet_slo_reports,
            "p99_ttft_s": self.p99_ttft_s,
            "p99_tpot_s": self.p99_tpot_s,
            "throughput_vs_unbounded": vs,
            "weighted_throughput_vs_unbounded": weighted_score(vs, self.priority),
            "cut_response_s": self.cut_response_s,
            "decide_cpu_ms_mean": _ms(np.mean, self.decide_cpu_s),
            "decide_cpu_ms_max": _ms(np.max, self.decide_cpu_s),
        }


def _ms(stat: Callable[[list[float]], Any], seconds: list[float]) -> float | None:
    return 1e3 * float(stat(seconds)) if seconds else None


def weighted_score(vs: dict[str, float | None], priority: dict[str, float]) -> float | None:
    """Priority-weighted mean of each job's work relative to the unbounded run."""
    pairs = [(priority[j], v) for j, v in vs.items() if v is not None]
    total = sum(p for p, _ in pairs)
    return sum(p * v for p, v in pairs) / total if total > 0 else None


def write_outputs(out_dir: Path, result: SimResult, summary: dict[str, Any]) -> None:
    """Write ``budget.csv`` and ``summary.json`` (the trace is written as the run goes)."""
    with (out_dir / "budget.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(BUDGET_HEADER)
        for t, b in result.budget_changes:
            w.writerow([f"{t:.3f}", f"{b:.3f}"])
    text = json.dumps(finite(summary), indent=2, allow_nan=False)
    (out_dir / "summary.json").write_text(text + "\n", encoding="utf-8")


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
