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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from scheduler.sim.workloads import JobRun

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


class TraceWriter:
    """Writes ``trace.csv``, keeping every ``every``-th tick."""

    def __init__(self, path: Path, every: int = 1) -> None:
        self._fh: IO[str] = path.open("w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._fh)
        self._csv.writerow(TRACE_HEADER)
        self._every = max(1, every)
        self._tick = 0

    def due(self) -> bool:
        """Count a tick; whether it is recorded."""
        self._tick += 1
        return self._tick % self._every == 0

    def row(
        self,
        t: float,
        node: str,
        gpu: int,
        gpu_type: str,
        job: str,
        power_limit_w: float,
        sm_clock_mhz: float,
        power_w: float,
        work: float,
    ) -> None:
        """One GPU at one recorded tick."""
        self._csv.writerow(
            [
                f"{t:.3f}",
                node,
                gpu,
                gpu_type,
                job,
                f"{power_limit_w:.3f}",
                f"{sm_clock_mhz:.0f}",
                f"{power_w:.3f}",
                f"{work:.6g}",
            ]
        )

    def close(self) -> None:
        """Flush and close the file."""
        self._fh.close()


def slo_met(runs: dict[str, JobRun], duration_s: float) -> dict[str, tuple[bool, str]]:
    """Per job, whether its SLO was met and how it was judged."""
    out: dict[str, tuple[bool, str]] = {}
    for job_id, run in runs.items():
        spec = run.spec
        if spec.kind == "train":
            if spec.deadline_s is not None:
                ok = run.finished_s is not None and run.finished_s <= spec.deadline_s + 1e-9
                out[job_id] = (
                    ok,
                    f"finish {spec.total_samples:g} samples by {spec.deadline_s:g} s",
                )
            elif spec.slo_samples_per_s > 0:
                rate = run.samples_done / run.running_s if run.running_s > 0 else 0.0
                ok = rate >= TRAIN_SLO_SHARE * spec.slo_samples_per_s
                out[job_id] = (ok, f"averaged {rate:.4g} of {spec.slo_samples_per_s:g} samples/s")
            else:
                out[job_id] = (True, "no SLO")
            continue
        if spec.slo_tokens_per_s <= 0:
            out[job_id] = (True, "no SLO")
            continue
        end = min(spec.end_s or duration_s, duration_s)
        active_s = max(0.0, end - spec.arrive_s)
        owed = min(run.offered_output_tokens, spec.slo_tokens_per_s * active_s)
        ok = run.served_output_tokens >= INFER_SLO_SHARE * owed
        out[job_id] = (
            ok,
            f"served {run.served_output_tokens:.4g} of {owed:.4g} output tokens owed",
        )
    return out


@dataclass
class SimResult:
    """Everything a run measured."""

    policy: str
    duration_s: float
    units: dict[str, str]
    priority: dict[str, float]
    energy_j: float = 0.0
    budget_violation_s: float = 0.0
    max_overshoot_w: float = 0.0
    times_s: list[float] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)
    budget_w: list[float] = field(default_factory=list)
    budget_changes: list[tuple[float, float]] = field(default_factory=list)
    cut_response_s: list[float] = field(default_factory=list)
    decide_cpu_s: list[float] = field(default_factory=list)
    work: dict[str, float] = field(default_factory=dict)
    job_energy_j: dict[str, float] = field(default_factory=dict)
    slo: dict[str, tuple[bool, str]] = field(default_factory=dict)
    unmet_slo_reports: dict[str, str] = field(default_factory=dict)
    _open_cut: tuple[float, float] | None = None

    @classmethod
    def empty(cls, policy: str, duration_s: float, runs: dict[str, JobRun]) -> SimResult:
        """A result to fill in."""
        units = {j: ("samples" if r.spec.kind == "train" else "tokens") for j, r in runs.items()}
        return cls(policy, duration_s, units, {j: r.spec.priority for j, r in runs.items()})

    def budget_change(self, t: float, old_w: float | None, new_w: float) -> None:
        """Record a budget change (a cut opens a response-time measurement)."""
        self.budget_changes.append((t, new_w))
        if old_w is not None and new_w < old_w:
            self._open_cut = (t, new_w)

    def step(self, t: float, dt: float, cluster_w: float, budget_w: float) -> None:
        """Record one step's measured cluster power."""
        self.energy_j += cluster_w * dt
        self.times_s.append(t)
        self.power_w.append(cluster_w)
        self.budget_w.append(budget_w)
        if cluster_w > budget_w + 1e-6:
            self.budget_violation_s += dt
            self.max_overshoot_w = max(self.max_overshoot_w, cluster_w - budget_w)
        if self._open_cut is not None and cluster_w <= self._open_cut[1] + 1e-6:
            self.cut_response_s.append(t - self._open_cut[0])
            self._open_cut = None

    def finish(self, runs: dict[str, JobRun], slo: dict[str, tuple[bool, str]]) -> None:
        """Take the per-job totals."""
        self.work = {j: r.work_units for j, r in runs.items()}
        self.job_energy_j = {j: r.energy_j for j, r in runs.items()}
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
            "joules_per_unit": self.joules_per_unit(),
            "budget_violation_s": self.budget_violation_s,
            "max_overshoot_w": self.max_overshoot_w,
            "slo_met": {j: ok for j, (ok, _) in self.slo.items()},
            "slo_detail": {j: why for j, (_, why) in self.slo.items()},
            "unmet_slo_reports": self.unmet_slo_reports,
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
        w = csv.writer(fh)
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
