"""min-energy: the fewest joules per unit of work while every job meets its SLO.

Candidates are locked SM clocks: at clock ``c`` a GPU draws ``p(c)`` and does ``r(c)``
units/s, and needs a power limit of ``p(c)`` (plus a margin, within its range). Locking
the clock rather than only capping power matters for memory-bound decode, whose
energy-optimal clock draws less than the GPU's minimum power limit.

Per job: every group starts at its least-joules-per-unit clock; while the job's rate is
below its SLO (``slo_units_per_s``), the group step adding rate for the fewest extra
watts is taken. If the limits this needs exceed the budget, priorities decide: jobs
whose SLO cannot be met anyway, then the lowest priorities, fall back to their
least-energy clocks (SLO given up, reported with the reason) until the rest fit. What
the budget still holds then goes back to the jobs that gave way, highest priority first,
in the same steps (fewest extra watts per unit of rate), toward their SLOs: a job short
of its SLO runs as fast as the budget allows. Budget left over once every job meets its
SLO is not spent: it would only buy speed at a higher energy per unit.
"""

from __future__ import annotations

import numpy as np

from scheduler.core.problem import Allocation, Group, Problem
from scheduler.core.types import JobState, SLOReport
from scheduler.policies.scaling import over_slo, replica_count, serving_subset

#: Limit margin above the power a locked clock draws, fraction.
LIMIT_MARGIN_FRAC = 0.02


class _Clocks:
    """Per-group clock options, computed once per curve within one allocation."""

    def __init__(self) -> None:
        self._limits: dict[tuple[int, float, float], np.ndarray] = {}
        self._cheapest: dict[int, int] = {}

    def limits(self, g: Group) -> np.ndarray:
        """Power limit each locked clock needs, watts."""
        key = (id(g.clock_curve), g.lo_w, g.hi_w)
        if key not in self._limits:
            lim = np.ceil(g.clock_curve.limit_power_w * (1.0 + LIMIT_MARGIN_FRAC))
            self._limits[key] = np.clip(lim, g.lo_w, g.hi_w)
        return self._limits[key]

    def cheapest(self, g: Group) -> int:
        """Index of the clock with the fewest joules per unit."""
        c = g.clock_curve
        if id(c) not in self._cheapest:
            per_unit = np.where(c.rate > 0, c.power_w / np.maximum(c.rate, 1e-12), np.inf)
            self._cheapest[id(c)] = int(np.argmin(per_unit))
        return self._cheapest[id(c)]


def _meet_slo(groups: list[Group], slo: float, clocks: _Clocks) -> tuple[list[int], bool]:
    """Clock index per group meeting ``slo`` with the least extra power; and whether met."""
    idx = [clocks.cheapest(g) for g in groups]

    def rate() -> float:
        return sum(g.size * float(g.clock_curve.rate[k]) for g, k in zip(groups, idx, strict=True))

    while rate() < slo:
        best, best_cost, best_k = -1, np.inf, 0
        for i, g in enumerate(groups):
            c = g.clock_curve
            k = idx[i]
            if k + 1 >= len(c.rate):
                continue
            gain = g.size * float(c.rate[-1] - c.rate[k])
            need = slo - rate()
            # the smallest step up that covers the shortfall, else the top clock
            dr = g.size * (c.rate[k + 1 :] - c.rate[k])
            step = int(np.argmax(dr >= need)) if gain >= need else len(dr) - 1
            extra = g.size * float(c.power_w[k + 1 + step] - c.power_w[k])
            per_rate = extra / max(float(dr[step]), 1e-12)
            if dr[step] > 0 and per_rate < best_cost:
                best, best_cost = i, per_rate
                best_k = k + 1 + step
        if best < 0:
            return idx, False
        idx[best] = best_k
    return idx, True


def _top_up(
    groups: list[Group], idx: list[int], slo: float, room_w: float, clocks: _Clocks
) -> float:
    """Raise clocks in ``idx`` (in place) toward ``slo``, each move the one adding rate for
    the fewest extra watts of limits (a move may jump a stretch where the curve adds no
    rate), while the extra fits in ``room_w``; returns the room left."""
    rate = sum(g.size * float(g.clock_curve.rate[k]) for g, k in zip(groups, idx, strict=True))
    while rate < slo:
        move: tuple[float, int, int, float, float] | None = None  # cost, group, clock, dw, dr
        for i, g in enumerate(groups):
            k = idx[i]
            lim = clocks.limits(g)
            dw = g.size * (lim[k + 1 :] - lim[k])
            dr = g.size * (g.clock_curve.rate[k + 1 :] - g.clock_curve.rate[k])
            ok = (dr > 0) & (dw <= room_w)
            if not ok.any():
                continue
            cost = np.where(ok, np.maximum(dw, 0.0) / np.where(ok, dr, 1.0), np.inf)
            j = int(np.argmin(cost))
            if move is None or cost[j] < move[0]:
                move = (float(cost[j]), i, k + 1 + j, float(dw[j]), float(dr[j]))
        if move is None:
            break
        _, group, clock, dw_w, dr_u = move
        idx[group] = clock
        room_w -= dw_w
        rate += dr_u
    return room_w


class MinEnergyPolicy:
    """Least energy per unit subject to SLOs, with priorities deciding under scarcity.

    Args:
        scale_replicas: Choose how many replicas of each inference job serve (jobs with
            ``min_shards`` below ``shards``; see :mod:`scheduler.policies.scaling`).
        tune_power: ``clocks``: lock each GPU at the clock of fewest joules per unit that
            meets the SLO (with the limit that clock needs); ``limits``: set only that
            limit (the firmware picks the clock); ``none``: serve at the maximum limit with
            free clocks (only the replica count saves energy).
    """

    name = "min-energy"

    def __init__(self, scale_replicas: bool = True, tune_power: str = "clocks") -> None:
        if tune_power not in ("clocks", "limits", "none"):
            raise ValueError(f"tune_power must be clocks, limits or none, not {tune_power!r}")
        self.scale_replicas = scale_replicas
        self.tune_power = tune_power

    def allocate(self, problem: Problem) -> Allocation:
        """Clock locks and the limits they need; SLO shortfalls reported."""
        n = len(problem.min_w)
        limits = problem.min_w.astype(float).copy()
        locks = np.zeros(n, dtype=int)
        clocks = _Clocks()
        jobs = problem.jobs()
        by_job: dict[str, list[Group]] = {j.job_id: [] for j in jobs}
        for g in problem.groups:
            by_job[g.job.job_id].append(g)
        plan: dict[str, list[int]] = {}
        met: dict[str, bool] = {}
        unmet: list[SLOReport] = []
        parked = np.zeros(n, dtype=bool)
        active: dict[str, int] = {}
        for job in jobs:
            count = replica_count(job, by_job[job.job_id]) if self.scale_replicas else None
            if count is not None:
                by_job[job.job_id], idle_rows = serving_subset(by_job[job.job_id], count)
                parked[idle_rows] = True
                active[job.job_id] = count
        for g in problem.groups:  # parked replicas: lowest limit, clock locked lowest
            rows = g.rows[parked[g.rows]]
            limits[rows] = g.lo_w
            locks[rows] = int(g.clock_curve.sm_clock_mhz[0])
        for job in jobs:
            if over_slo(job):  # its replicas measure a latency miss: full clocks
                plan[job.job_id] = [len(g.clock_curve.rate) - 1 for g in by_job[job.job_id]]
                met[job.job_id] = True
                continue
            plan[job.job_id], met[job.job_id] = _meet_slo(
                by_job[job.job_id], job.slo_units_per_s, clocks
            )
            if not met[job.job_id]:
                top = sum(g.size * float(g.clock_curve.rate[-1]) for g in by_job[job.job_id])
                unmet.append(
                    SLOReport(
                        job.job_id,
                        f"SLO {job.slo_units_per_s:g} units/s exceeds its GPUs' capacity at "
                        f"full power ({top:.4g} units/s)",
                    )
                )

        def need_w(job: JobState, idx: list[int]) -> float:
            return sum(
                g.size * float(clocks.limits(g)[k])
                for g, k in zip(by_job[job.job_id], idx, strict=True)
            )

        budget = problem.budget_w - float(np.sum(problem.min_w[~problem.busy]))
        total = sum(need_w(j, plan[j.job_id]) for j in jobs)
        # SLOs that cannot be met anyway give way first, then the lowest priorities
        gave_way: list[JobState] = []
        for job in sorted(jobs, key=lambda j: (met[j.job_id], j.priority)):
            if total <= budget:
                break
            if job.slo_units_per_s <= 0:
                continue
            cheap = [clocks.cheapest(g) for g in by_job[job.job_id]]
            saved = need_w(job, plan[job.job_id]) - need_w(job, cheap)
            if saved <= 0:
                continue
            short = total - budget
            plan[job.job_id] = cheap
            total -= saved
            gave_way.append(job)
            if met[job.job_id]:
                unmet.append(
                    SLOReport(
                        job.job_id,
                        f"budget {problem.budget_w:g} W cannot meet every SLO ({short:.0f} W "
                        f"short); priority {job.priority:g} gave way",
                    )
                )
        # what the budget still holds goes back to those that gave way, highest first
        room = budget - total
        for job in sorted(gave_way, key=lambda j: -j.priority):
            if room <= 0:
                break
            groups = by_job[job.job_id]
            room = _top_up(groups, plan[job.job_id], job.slo_units_per_s, room, clocks)
            rate = sum(
                g.size * float(g.clock_curve.rate[k])
                for g, k in zip(groups, plan[job.job_id], strict=True)
            )
            if rate >= job.slo_units_per_s:  # single steps reached it after all
                unmet = [r for r in unmet if r.job_id != job.job_id]
        for job in jobs:
            for g, k in zip(by_job[job.job_id], plan[job.job_id], strict=True):
                if self.tune_power == "none":
                    limits[g.rows] = g.hi_w
                    continue
                limits[g.rows] = clocks.limits(g)[k]
                if self.tune_power == "clocks":
                    locks[g.rows] = int(g.clock_curve.sm_clock_mhz[k])
        return Allocation(limits, locks, unmet, parked if parked.any() else None, active)
