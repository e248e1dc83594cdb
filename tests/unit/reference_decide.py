"""decide() as of f6df322 (per-GPU), kept only as the oracle of test_decide_equivalence.py.

``decide(observed, config, policy) -> Actions``: the controller's pure step.

One call: place pending jobs whole on free GPUs, build the allocation problem over the
GPUs that can be commanded, let the policy choose limits and clock locks, make the
limits safe (:mod:`scheduler.core.safety`), and derive load weights. No I/O, no clock,
no randomness: the live controller and the simulator run exactly this.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from functools import lru_cache

import numpy as np

from scheduler.core.powermodel import PowerModel, serving_curve
from scheduler.core.problem import Group, Policy, Problem
from scheduler.core.safety import LimitState, plan_limits
from scheduler.core.specs import spec_of
from scheduler.core.types import (
    Actions,
    DecideConfig,
    GPUState,
    JobState,
    LoadWeight,
    LockClocks,
    ObservedState,
    ResetClocks,
    SetPowerLimit,
    SLOReport,
)
from tests.unit.reference_placement import place

_DEFAULT_MODEL = PowerModel()


@lru_cache(maxsize=1024)
def _limit_grid(min_w: float, max_w: float, lo_w: float, steps: int) -> np.ndarray:
    grid = np.round(np.linspace(min_w, max_w, steps))
    out = np.unique(np.concatenate(([lo_w], grid[(grid > lo_w) & (grid <= max_w)])))
    out.flags.writeable = False
    return out


def _groups(
    live: list[GPUState],
    placed: dict[tuple[str, int], str],
    jobs: dict[str, JobState],
    model: PowerModel,
    steps: int,
    range_w: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[Group]:
    """Busy live GPUs grouped per job and type; each group's limits lie inside every
    member's reported range (``range_w``: per live GPU, its min and max limit; default:
    from each GPU's state)."""
    if range_w is None:
        specs = [spec_of(g.gpu_type) for g in live]
        range_w = (
            np.array(
                [g.min_limit_w or s.min_power_limit_w for g, s in zip(live, specs, strict=True)]
            ),
            np.array(
                [g.max_limit_w or s.max_power_limit_w for g, s in zip(live, specs, strict=True)]
            ),
        )
    members: dict[tuple[str, str], list[int]] = defaultdict(list)
    for pos, g in enumerate(live):
        job_id = g.job_id if g.job_id is not None else placed.get((g.node, g.index))
        if job_id is not None and job_id in jobs:
            members[(job_id, g.gpu_type)].append(pos)
    groups = []
    for (job_id, gpu_type), rows in members.items():
        job = jobs[job_id]
        min_w = float(np.max(range_w[0][rows]))
        max_w = max(min_w, float(np.min(range_w[1][rows])))
        lo = min(max_w, max(min_w, job.floor_w))
        grid = _limit_grid(min_w, max_w, lo, steps)
        curve = model.limit_curve(gpu_type, job.workload, grid)
        clock_curve = model.clock_curve(gpu_type, job.workload)
        if job.kind == "infer" and job.prompt_tokens_per_output > 0:  # planned in GPU time
            prefill = replace(job.workload, kind="prefill")
            rho = job.prompt_tokens_per_output
            curve = serving_curve(curve, model.limit_curve(gpu_type, prefill, grid), rho)
            clock_curve = serving_curve(clock_curve, model.clock_curve(gpu_type, prefill), rho)
        groups.append(
            Group(
                job=job,
                gpu_type=gpu_type,
                rows=np.asarray(rows, dtype=int),
                lo_w=float(lo),
                hi_w=max_w,
                curve=curve,
                clock_curve=clock_curve,
            )
        )
    return groups


def _load_weights(
    groups: list[Group], live: list[GPUState], limits_w: np.ndarray, parked: np.ndarray | None
) -> list[LoadWeight]:
    """Shares proportional to predicted rates: every inference job's replicas (request
    routing; a parked replica gets 0: drained), and training jobs whose shards' speeds
    differ (micro-batch shares)."""
    per_job: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    kinds: dict[str, str] = {}
    for g in groups:
        rates = np.interp(limits_w[g.rows], g.curve.limits_w, g.curve.rate)
        if parked is not None:
            rates = np.where(parked[g.rows], 0.0, rates)
        per_job[g.job.job_id].append((g.rows, rates))
        kinds[g.job.job_id] = g.job.kind
    out = []
    for job_id, parts in per_job.items():
        rows = np.concatenate([r for r, _ in parts])
        rates = np.concatenate([x for _, x in parts])
        if kinds[job_id] == "train" and np.ptp(rates) <= 1e-3 * float(np.max(rates)):
            continue
        total = float(np.sum(rates))
        weights = rates / total if total > 0 else np.full(len(rates), 1.0 / len(rates))
        for r, w in zip(rows.tolist(), weights.tolist(), strict=True):
            out.append(LoadWeight(job_id, live[r].node, live[r].index, w))
    return out


def decide(observed: ObservedState, config: DecideConfig, policy: Policy) -> Actions:
    """Plan one control period.

    Args:
        observed: GPUs, jobs, budget and power model as the controller sees them now.
        config: Tuning (hysteresis bands, planning grid).
        policy: The allocation policy.

    Returns:
        The actions; execute ``power_limits`` in order (lowerings come first).
    """
    model = observed.power_model or _DEFAULT_MODEL
    gpus = observed.gpus
    usable_w = observed.usable_budget_w
    jobs = {j.job_id: j for j in observed.jobs if j.phase in ("pending", "running")}
    placements, unplaceable = place(gpus, observed.jobs, model, usable_w)
    placed = {(p.node, p.index): p.job_id for p in placements}

    specs = [spec_of(g.gpu_type) for g in gpus]
    stale = np.array([g.stale for g in gpus], dtype=bool)
    reported_min_w = np.array(
        [g.min_limit_w or s.min_power_limit_w for g, s in zip(gpus, specs, strict=True)],
        dtype=float,
    )
    state = LimitState(
        acked_w=np.array([g.acked_limit_w for g in gpus], dtype=float),
        pending_w=np.array(
            [np.nan if g.pending_limit_w is None else g.pending_limit_w for g in gpus], dtype=float
        ),
        stale=stale,
        min_w=np.maximum(reported_min_w, [g.refused_below_w for g in gpus]),
        max_w=np.array(
            [g.max_limit_w or s.max_power_limit_w for g, s in zip(gpus, specs, strict=True)],
            dtype=float,
        ),
        tdp_w=np.array([s.tdp_w for s in specs], dtype=float),
    )
    live_idx = np.flatnonzero(~stale)
    live = [gpus[i] for i in live_idx]
    ranges = (reported_min_w[live_idx], state.max_w[live_idx])
    groups = _groups(live, placed, jobs, model, config.limit_grid_steps, ranges)
    busy = np.zeros(len(live), dtype=bool)
    for grp in groups:
        busy[grp.rows] = True
    problem = Problem(
        budget_w=usable_w - float(np.sum(state.accounted_w[stale])),
        min_w=state.min_w[live_idx],
        max_w=state.max_w[live_idx],
        tdp_w=state.tdp_w[live_idx],
        busy=busy,
        groups=groups,
        model=model,
    )
    alloc = policy.allocate(problem)
    live_target = np.where(busy, alloc.limits_w, problem.min_w)
    target = state.commanded_w.copy()
    target[live_idx] = live_target
    plan = plan_limits(state, target, usable_w, config.lower_band_frac, config.raise_band_frac)
    new_w = plan.new_w.tolist()
    limits = [SetPowerLimit(gpus[i].node, gpus[i].index, new_w[i]) for i in plan.order.tolist()]

    locks: list[LockClocks] = []
    resets: list[ResetClocks] = []
    wanted = np.where(busy, alloc.lock_max_sm_clock_mhz, 0).astype(int).tolist()
    for gpu, want in zip(live, wanted, strict=True):
        have = gpu.locked_max_sm_clock_mhz
        if want > 0 and want != have:
            spec = spec_of(gpu.gpu_type)
            locks.append(LockClocks(gpu.node, gpu.index, spec.min_sm_clock_mhz, want))
        elif want == 0 and have is not None:
            resets.append(ResetClocks(gpu.node, gpu.index))

    effective = np.where(np.isnan(plan.new_w), state.commanded_w, plan.new_w)[live_idx]
    notes = []
    if plan.infeasible:
        notes.append(
            f"budget {observed.budget_w:g} W - reserve {observed.reserve_w:g} W cannot cover "
            "the minimum limits of the GPUs plus the stale GPUs' commanded limits"
        )
    return Actions(
        placements=tuple(placements),
        power_limits=tuple(limits),
        clock_locks=tuple(locks),
        clock_resets=tuple(resets),
        load_weights=tuple(_load_weights(groups, live, effective, alloc.parked)),
        active_replicas=tuple(alloc.active_replicas.items()),
        unmet_slos=tuple(alloc.unmet_slos),
        unplaceable=tuple(SLOReport(u.job_id, u.reason) for u in unplaceable),
        raises_deferred=plan.raises_deferred,
        notes=tuple(notes),
    )


# -- the per-group planning helpers and max-throughput as of f6df322 -------------------------
from scheduler.core.problem import Allocation, no_locks  # noqa: E402
from scheduler.policies.planning import greedy_levels  # noqa: E402


def group_values(problem: Problem, rates: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Value of each group at each of its candidate limits.

    Args:
        problem: The problem.
        rates: Per group, rate per GPU at each candidate (default: the group's curve).

    Returns:
        Per group, ``priority * min(size * rate, demand share) / usable rate of the job``.
    """
    rates = rates if rates is not None else [g.curve.rate for g in problem.groups]
    tops: dict[int, float] = {}
    for r in rates:
        if id(r) not in tops:
            tops[id(r)] = float(np.max(r))
    full: dict[str, float] = {}
    for g, r in zip(problem.groups, rates, strict=True):
        full[g.job.job_id] = full.get(g.job.job_id, 0.0) + g.size * tops[id(r)]
    out = []
    for g, r in zip(problem.groups, rates, strict=True):
        job_full = full[g.job.job_id]
        group_full = g.size * tops[id(r)]
        cap = group_full
        demand = g.job.demand_units_per_s
        if demand is not None and job_full > 0:
            cap = min(group_full, demand * group_full / job_full)
        usable = min(job_full, demand) if demand is not None else job_full
        scale = g.job.priority / usable if usable > 0 else 0.0
        out.append(scale * np.minimum(g.size * r, cap))
    return out


def group_costs(groups: list[Group], limits: list[np.ndarray]) -> list[np.ndarray]:
    """Summed limits of each group at each candidate, watts."""
    return [g.size * lim for g, lim in zip(groups, limits, strict=True)]


class MaxThroughputPolicy:
    """max-throughput as of f6df322."""

    name = "max-throughput"

    def allocate(self, problem: Problem) -> Allocation:
        """Give watts where they add the most weighted throughput per watt."""
        n = len(problem.min_w)
        limits = problem.min_w.astype(float).copy()
        groups = problem.groups
        budget = problem.budget_w - float(np.sum(problem.min_w[~problem.busy]))
        values = group_values(problem)
        costs = group_costs(groups, [g.curve.limits_w for g in groups])
        levels = greedy_levels(values, costs, budget)
        for g, k in zip(groups, levels, strict=True):
            limits[g.rows] = g.curve.limits_w[k]
        return Allocation(limits, no_locks(n))
