"""``decide(observed, config, policy) -> Actions``: the controller's pure step.

One call: place pending jobs whole on free GPUs, build the allocation problem over the
GPUs that can be commanded, let the policy choose limits and clock locks, make the
limits safe (:mod:`scheduler.core.safety`), and derive load weights. No I/O, no clock,
no randomness: the live controller and the simulator run exactly this.

At scale (100,000 GPUs) the step is columnar: each GPU field is read once into an array
(one list comprehension per field, no per-GPU Python beyond that), groups are formed by
sorting codes, per-group work runs once per group (curves shared between alike groups),
and command objects are built only for GPUs whose command changes. Load weights, which
every inference replica gets every period, are rebuilt only for jobs whose weights or
GPUs changed since the last call (:class:`_WeightCache`); the output is the same either
way.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from itertools import repeat
from operator import itemgetter
from typing import Any, ClassVar

import numpy as np

from scheduler.core.demand import DemandCurve
from scheduler.core.domains import Caps
from scheduler.core.placement import place
from scheduler.core.powermodel import Curve, PowerModel, serving_curve
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

_DEFAULT_MODEL = PowerModel()


@lru_cache(maxsize=1024)
def _limit_grid(min_w: float, max_w: float, lo_w: float, steps: int) -> np.ndarray:
    grid = np.round(np.linspace(min_w, max_w, steps))
    out = np.unique(np.concatenate(([lo_w], grid[(grid > lo_w) & (grid <= max_w)])))
    out.flags.writeable = False
    return out


class _Columns:
    """Per-GPU fields of ``observed.gpus`` as arrays (one pass per field).

    Attributes:
        types: Catalog types seen, in first-seen order.
        type_code: Per GPU, its position in ``types``.
        reported_min_w: Lowest limit it reported, else the catalog's, watts.
        max_w: Highest limit it reported, else the catalog's, watts.
        tdp_w: TDP, watts.
        acked_w: Acked limit, watts.
        pending_w: Largest unacked limit, watts (NaN: none).
        refused_below_w: Refused lowerings below this, watts.
        stale: Telemetry too old.
        job_ids: Per GPU, the job on it (None: idle).
        locked_mhz: Upper end of the acked SM clock lock, MHz (-1: clocks free).
    """

    def __init__(self, gpus: tuple[GPUState, ...]) -> None:
        type_names = [g.gpu_type for g in gpus]
        index: dict[str, int] = {}
        for t in dict.fromkeys(type_names):
            index[t] = len(index)
        self.types = list(index)
        specs = [spec_of(t) for t in self.types]
        n = len(gpus)
        self.type_code = np.fromiter(map(index.__getitem__, type_names), dtype=np.intp, count=n)
        spec_min = np.array([s.min_power_limit_w for s in specs], dtype=float)
        spec_max = np.array([s.max_power_limit_w for s in specs], dtype=float)
        self.spec_min_clock = [s.min_sm_clock_mhz for s in specs]
        raw_min = np.array([g.min_limit_w or 0.0 for g in gpus], dtype=float)
        raw_max = np.array([g.max_limit_w or 0.0 for g in gpus], dtype=float)
        code = self.type_code
        self.reported_min_w = np.where(raw_min != 0.0, raw_min, spec_min[code])
        self.max_w = np.where(raw_max != 0.0, raw_max, spec_max[code])
        self.tdp_w = np.array([s.tdp_w for s in specs], dtype=float)[code]
        self.acked_w = np.array([g.acked_limit_w for g in gpus], dtype=float)
        self.pending_w = np.array(
            [np.nan if g.pending_limit_w is None else g.pending_limit_w for g in gpus],
            dtype=float,
        )
        self.refused_below_w = np.array([g.refused_below_w for g in gpus], dtype=float)
        self.stale = np.array([g.stale for g in gpus], dtype=bool)
        self.job_ids: list[str | None] = [g.job_id for g in gpus]
        self.locked_mhz = np.array(
            [-1 if g.locked_max_sm_clock_mhz is None else g.locked_max_sm_clock_mhz for g in gpus],
            dtype=np.int64,
        )


def _job_codes(
    gpus: tuple[GPUState, ...],
    cols: _Columns,
    placed: dict[tuple[str, int], str],
    jobs: dict[str, JobState],
) -> tuple[np.ndarray, list[str]]:
    """Per GPU, the position in the returned job list of the job it runs or was just
    placed on (-1: none, or a job not pending or running)."""
    job_list = list(jobs)
    code: dict[str | None, int] = {j: k for k, j in enumerate(job_list)}
    ids = cols.job_ids
    if placed:
        ids = [
            placed.get((g.node, g.index)) if j is None else j
            for g, j in zip(gpus, ids, strict=True)
        ]
    out = np.fromiter(map(code.get, ids, repeat(-1)), dtype=np.intp, count=len(ids))
    return out, job_list


class _CurveCache:
    """Planning curves per (type, workload, limit range, floor); shared by alike groups
    within one call, and the GPU-time (serving) mix reused across calls while the power
    model returns the same decode and prefill curves."""

    _serving: ClassVar[dict[tuple[int, int, float], tuple[Curve, Curve, Curve]]] = {}
    _SERVING_MAX: ClassVar[int] = 4096

    def __init__(self, model: PowerModel, steps: int) -> None:
        self.model = model
        self.steps = steps
        self.local: dict[tuple[Any, ...], tuple[Curve, Curve]] = {}

    @classmethod
    def _mix(cls, decode: Curve, prefill: Curve, rho: float) -> Curve:
        key = (id(decode), id(prefill), rho)
        hit = cls._serving.get(key)
        if hit is not None and hit[0] is decode and hit[1] is prefill:
            return hit[2]
        mixed = serving_curve(decode, prefill, rho)
        if len(cls._serving) >= cls._SERVING_MAX:
            cls._serving.clear()
        cls._serving[key] = (decode, prefill, mixed)  # holds both: their ids stay theirs
        return mixed

    def curves(
        self, gpu_type: str, job: JobState, min_w: float, max_w: float, lo: float
    ) -> tuple[Curve, Curve]:
        """The group's limit curve and clock curve."""
        rho = job.prompt_tokens_per_output if job.kind == "infer" else 0.0
        key = (gpu_type, job.workload, min_w, max_w, lo, rho)
        hit = self.local.get(key)
        if hit is not None:
            return hit
        model = self.model
        grid = _limit_grid(min_w, max_w, lo, self.steps)
        curve = model.limit_curve(gpu_type, job.workload, grid)
        clock_curve = model.clock_curve(gpu_type, job.workload)
        if rho > 0:  # planned in GPU time
            prefill = replace(job.workload, kind="prefill")
            curve = self._mix(curve, model.limit_curve(gpu_type, prefill, grid), rho)
            clock_curve = self._mix(clock_curve, model.clock_curve(gpu_type, prefill), rho)
        self.local[key] = (curve, clock_curve)
        return curve, clock_curve


def _build_groups(
    live_job: np.ndarray,
    live_type: np.ndarray,
    job_list: list[str],
    types: list[str],
    jobs: dict[str, JobState],
    model: PowerModel,
    steps: int,
    range_w: tuple[np.ndarray, np.ndarray],
) -> list[Group]:
    """Busy live GPUs grouped per job and type, in the order each group's first GPU
    appears; rows ascending. Each group's limits lie inside every member's reported range
    (``range_w``: per live GPU, its min and max limit).

    Args:
        live_job: Per live GPU, its job's position in ``job_list`` (-1: idle).
        live_type: Per live GPU, its type's position in ``types``.
        job_list: Job ids.
        types: Type names.
        jobs: Job id -> state.
        model: The power model.
        steps: Candidate limits per group.
        range_w: Per live GPU, lowest and highest limit, watts.
    """
    busy_rows = np.flatnonzero(live_job >= 0)
    if busy_rows.size == 0:
        return []
    key = live_job[busy_rows] * len(types) + live_type[busy_rows]
    order = np.argsort(key, kind="stable")
    rows_sorted = busy_rows[order]
    key_sorted = key[order]
    starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
    ends = np.r_[starts[1:], len(key_sorted)]
    min_w_all = np.maximum.reduceat(range_w[0][rows_sorted], starts)
    max_w_all = np.maximum(min_w_all, np.minimum.reduceat(range_w[1][rows_sorted], starts))
    first = rows_sorted[starts]  # rows ascending within a key: the first is the smallest
    cache = _CurveCache(model, steps)
    groups = []
    for s in np.argsort(first, kind="stable").tolist():
        k = int(key_sorted[starts[s]])
        job = jobs[job_list[k // len(types)]]
        gpu_type = types[k % len(types)]
        min_w = float(min_w_all[s])
        max_w = float(max_w_all[s])
        lo = min(max_w, max(min_w, job.floor_w))
        curve, clock_curve = cache.curves(gpu_type, job, min_w, max_w, float(lo))
        groups.append(
            Group(
                job=job,
                gpu_type=gpu_type,
                rows=rows_sorted[starts[s] : ends[s]],
                lo_w=float(lo),
                hi_w=max_w,
                curve=curve,
                clock_curve=clock_curve,
            )
        )
    return groups


def _groups(
    live: list[GPUState],
    placed: dict[tuple[str, int], str],
    jobs: dict[str, JobState],
    model: PowerModel,
    steps: int,
    range_w: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[Group]:
    """Busy GPUs of ``live`` grouped per job and type (see :func:`_build_groups`);
    ``range_w`` defaults to each GPU's reported range, else its catalog's."""
    gpus = tuple(live)
    cols = _Columns(gpus)
    codes, job_list = _job_codes(gpus, cols, placed, jobs)
    ranges = range_w if range_w is not None else (cols.reported_min_w, cols.max_w)
    return _build_groups(codes, cols.type_code, job_list, cols.types, jobs, model, steps, ranges)


class _WeightCache:
    """Load weights from the last calls: when every job's GPUs and weights are those of
    the last call, its (immutable) :class:`LoadWeight` objects are returned again; else
    each job whose GPUs and weights are unchanged keeps its objects."""

    _last: ClassVar[tuple[list[str], bytes, list[str], list[LoadWeight]] | None] = None
    _jobs: ClassVar[dict[str, tuple[list[str], bytes, list[LoadWeight]]]] = {}
    _MAX_JOBS: ClassVar[int] = 200_000

    @classmethod
    def all(
        cls,
        job_ids: list[str],
        counts: np.ndarray,
        nodes: list[str],
        index: np.ndarray,
        weights: np.ndarray,
    ) -> list[LoadWeight]:
        """Every job's load weights, jobs in the order given, ``counts`` entries each."""
        blob = counts.tobytes() + index.tobytes() + weights.tobytes()
        last = cls._last
        if last is not None and last[1] == blob and last[0] == job_ids and last[2] == nodes:
            return last[3]
        out: list[LoadWeight] = []
        end = np.cumsum(counts).tolist()
        start = [0, *end[:-1]]
        for job_id, a, b in zip(job_ids, start, end, strict=True):
            job_nodes = nodes[a:b]
            job_blob = index[a:b].tobytes() + weights[a:b].tobytes()
            hit = cls._jobs.get(job_id)
            if hit is not None and hit[1] == job_blob and hit[0] == job_nodes:
                out.extend(hit[2])
                continue
            made = list(
                map(
                    LoadWeight,
                    repeat(job_id),
                    job_nodes,
                    index[a:b].tolist(),
                    weights[a:b].tolist(),
                )
            )
            if len(cls._jobs) >= cls._MAX_JOBS:
                cls._jobs.clear()
            cls._jobs[job_id] = (job_nodes, job_blob, made)
            out.extend(made)
        cls._last = (job_ids, blob, nodes, out)
        return out


def _rates(groups: list[Group], limits_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every group's rows concatenated in group order, and each one's predicted rate at
    ``limits_w`` (one interpolation per distinct curve)."""
    rows = np.concatenate([g.rows for g in groups])
    slot: dict[int, int] = {}
    curves: list[Curve] = []
    curve_of = np.empty(len(groups), dtype=np.intp)
    for i, g in enumerate(groups):
        k = slot.get(id(g.curve))
        if k is None:
            k = slot[id(g.curve)] = len(curves)
            curves.append(g.curve)
        curve_of[i] = k
    sizes = np.fromiter((len(g.rows) for g in groups), dtype=np.intp, count=len(groups))
    entry_curve = np.repeat(curve_of, sizes)
    at = limits_w[rows]
    if len(curves) == 1:
        return rows, np.interp(at, curves[0].limits_w, curves[0].rate)
    rates = np.empty(len(rows))
    for k, curve in enumerate(curves):
        mask = entry_curve == k
        rates[mask] = np.interp(at[mask], curve.limits_w, curve.rate)
    return rows, rates


def _load_weights(
    groups: list[Group],
    live: np.ndarray,
    gpus: tuple[GPUState, ...],
    limits_w: np.ndarray,
    parked: np.ndarray | None,
) -> list[LoadWeight]:
    """Shares proportional to predicted rates: every inference job's replicas (request
    routing; a parked replica gets 0: drained), and training jobs whose shards' speeds
    differ (micro-batch shares).

    Args:
        groups: The problem's groups.
        live: Per problem row, its position in ``gpus``.
        gpus: Every GPU.
        limits_w: Per problem row, the limit it will hold, watts.
        parked: Per problem row, parked (None: none).
    """
    if not groups:
        return []
    rows, rates = _rates(groups, limits_w)
    if parked is not None:
        rates = np.where(parked[rows], 0.0, rates)
    # each job's rows: its groups' rows in group order; jobs in first-seen order
    job_pos: dict[str, int] = {}
    group_job = np.fromiter(
        (job_pos.setdefault(g.job.job_id, len(job_pos)) for g in groups),
        dtype=np.intp,
        count=len(groups),
    )
    sizes = np.fromiter((g.size for g in groups), dtype=np.intp, count=len(groups))
    entry_job = np.repeat(group_job, sizes)
    order = np.argsort(entry_job, kind="stable")
    rows, rates = rows[order], rates[order]
    counts = np.bincount(group_job, weights=sizes, minlength=len(job_pos)).astype(np.intp)
    start = np.r_[0, np.cumsum(counts)[:-1]]
    job_ids = list(job_pos)
    kinds = {g.job.job_id: g.job.kind for g in groups}
    # numpy's own sum per job (pairwise, as np.sum of the job's rates): one 2-D reduction
    # per distinct job size
    total = np.empty(len(job_ids))
    top = np.empty(len(job_ids))
    low = np.empty(len(job_ids))
    for size in np.unique(counts).tolist():
        which = np.flatnonzero(counts == size)
        block = rates[start[which][:, None] + np.arange(size)[None, :]]
        total[which] = np.sum(block, axis=1)
        top[which] = np.max(block, axis=1)
        low[which] = np.min(block, axis=1)
    is_train = np.array([kinds[j] == "train" for j in job_ids], dtype=bool)
    keep = ~(is_train & (top - low <= 1e-3 * top))  # training shards all alike: no weights
    if not keep.any():
        return []
    entry_of = np.repeat(np.arange(len(job_ids)), counts)
    kept = keep[entry_of]
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where((total > 0)[entry_of], rates / total[entry_of], 1.0 / counts[entry_of])[
            kept
        ]
    pos = live[rows[kept]].tolist()
    chosen = itemgetter(*pos)(gpus) if len(pos) > 1 else (gpus[pos[0]],)
    nodes = [g.node for g in chosen]
    index = np.array([g.index for g in chosen], dtype=np.int64)
    ids = [j for j, k in zip(job_ids, keep.tolist(), strict=True) if k]
    return _WeightCache.all(ids, counts[keep], nodes, index, weights)


def _domain_headroom(observed: ObservedState, usable_w: float) -> dict[str, float] | None:
    """Per node, the least spare watts (cap less the limits its GPUs may hold) of the power
    domains above it (None: no power tree, or no pending job to place)."""
    if observed.domains is None or not any(j.phase == "pending" for j in observed.jobs):
        return None
    gpus = observed.gpus
    caps = Caps.build(observed.domains, usable_w, [g.node for g in gpus])
    held = np.array([g.accounted_limit_w for g in gpus], dtype=float)
    room = caps.cap_w - caps.totals(held)
    least = caps.ancestors(np.arange(caps.size))  # [cap, depth]: its chain
    chain_min = np.where(least >= 0, room[np.maximum(least, 0)], np.inf).min(axis=1)
    per_gpu = chain_min[caps.leaf]
    return {g.node: float(w) for g, w in zip(gpus, per_gpu.tolist(), strict=True)}


def _bound_domains(
    caps: Caps, problem: Problem, target_w: np.ndarray, limits_w: np.ndarray
) -> tuple[str, ...]:
    """Domains whose limit binds: the policy wanted more for their GPUs than it allows,
    or their limits are within 2% of it while a busy GPU under them is below its maximum."""
    wanted = caps.over(np.clip(target_w, problem.min_w, problem.max_w))
    full = caps.totals(limits_w) >= caps.cap_w - np.maximum(0.02 * caps.cap_w, 1.0)
    room = np.zeros(caps.size, dtype=bool)
    below = problem.busy & (limits_w < problem.max_w - 1.0)
    np.logical_or.at(room, caps.leaf[below], True)
    for d in range(caps.size - 1, 0, -1):  # a busy GPU below a child is below its parent
        room[caps.parent[d]] |= room[d]
    hit = wanted | (full & room)
    return tuple(caps.names[d] for d in np.flatnonzero(hit[1:]) + 1)


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
    headroom = _domain_headroom(observed, usable_w)
    placements, unplaceable = place(gpus, observed.jobs, model, usable_w, headroom)
    placed = {(p.node, p.index): p.job_id for p in placements}

    cols = _Columns(gpus)
    stale = cols.stale
    state = LimitState(
        acked_w=cols.acked_w,
        pending_w=cols.pending_w,
        stale=stale,
        min_w=np.maximum(cols.reported_min_w, cols.refused_below_w),
        max_w=cols.max_w,
        tdp_w=cols.tdp_w,
    )
    layout = observed.domains
    tree = layout is not None and bool(layout.names)
    caps = Caps.build(layout, usable_w, [g.node for g in gpus] if tree else [""] * len(gpus))
    live_idx = np.flatnonzero(~stale)
    live_caps = caps.less(np.where(stale, state.accounted_w, 0.0)).subset(live_idx)
    job_code, job_list = _job_codes(gpus, cols, placed, jobs)
    ranges = (cols.reported_min_w[live_idx], state.max_w[live_idx])
    groups = _build_groups(
        job_code[live_idx],
        cols.type_code[live_idx],
        job_list,
        cols.types,
        jobs,
        model,
        config.limit_grid_steps,
        ranges,
    )
    busy = np.zeros(len(live_idx), dtype=bool)
    if groups:
        busy[np.concatenate([g.rows for g in groups])] = True
    problem = Problem(
        budget_w=usable_w - float(np.sum(state.accounted_w[stale])),
        min_w=state.min_w[live_idx],
        max_w=state.max_w[live_idx],
        tdp_w=state.tdp_w[live_idx],
        busy=busy,
        groups=groups,
        model=model,
        caps=live_caps if caps.size > 1 else None,
    )
    alloc = policy.allocate(problem)
    demand = None
    valuer = getattr(policy, "demand_curve", None)
    if config.demand_points > 0 and valuer is not None:
        curve = valuer(problem, config.demand_points)
        stale_w = float(np.sum(state.accounted_w[stale]))
        demand = DemandCurve(tuple(w + stale_w for w in curve.watts), curve.value)
    live_target = np.where(busy, alloc.limits_w, problem.min_w)
    target = state.commanded_w.copy()
    target[live_idx] = live_target
    plan = plan_limits(
        state, target, usable_w, config.lower_band_frac, config.raise_band_frac, caps
    )
    order = plan.order.tolist()
    sent = itemgetter(*order)(gpus) if len(order) > 1 else tuple(gpus[i] for i in order)
    limits = list(
        map(
            SetPowerLimit,
            [g.node for g in sent],
            [g.index for g in sent],
            plan.new_w[plan.order].tolist(),
        )
    )

    want = np.where(busy, alloc.lock_max_sm_clock_mhz, 0).astype(int)
    have = cols.locked_mhz[live_idx]
    lock_at = np.flatnonzero((want > 0) & (want != have))
    reset_at = np.flatnonzero((want == 0) & (have != -1))
    lock_pos = live_idx[lock_at].tolist()
    locking = itemgetter(*lock_pos)(gpus) if len(lock_pos) > 1 else [gpus[i] for i in lock_pos]
    min_clock = np.array(cols.spec_min_clock, dtype=np.int64)[cols.type_code[lock_pos]]
    locks = list(
        map(
            LockClocks,
            [g.node for g in locking],
            [g.index for g in locking],
            min_clock.tolist(),
            want[lock_at].tolist(),
        )
    )
    resets = [ResetClocks(gpus[i].node, gpus[i].index) for i in live_idx[reset_at].tolist()]

    effective = np.where(np.isnan(plan.new_w), state.commanded_w, plan.new_w)[live_idx]
    bound = _bound_domains(live_caps, problem, live_target, effective) if caps.size > 1 else ()
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
        load_weights=tuple(_load_weights(groups, live_idx, gpus, effective, alloc.parked)),
        active_replicas=tuple(alloc.active_replicas.items()),
        unmet_slos=tuple(alloc.unmet_slos),
        unplaceable=tuple(SLOReport(u.job_id, u.reason) for u in unplaceable),
        raises_deferred=plan.raises_deferred,
        notes=tuple(notes),
        bound_domains=bound,
        demand=demand,
    )
