"""Shared planning helpers: per-group value curves and greedy marginal-gain filling.

Jobs' throughputs are in different units (samples/s, tokens/s), so a job's value is its
rate as a fraction of what it could use (its rate at full power, or its demand if
lower), times its priority. An inference job's demand is split across its groups in
proportion to their full-power rates, which makes groups independent.
"""

from __future__ import annotations

import numpy as np

from scheduler.core.problem import Group, Problem

#: Fraction of a group's top rate regarded as "full speed" (the curve's plateau).
PLATEAU_FRAC = 0.999


def _per_distinct(arrays: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct array objects of ``arrays`` (alike groups share curves), and for each
    entry, the position of its array among them."""
    slot: dict[int, int] = {}
    distinct: list[np.ndarray] = []
    which = np.empty(len(arrays), dtype=np.intp)
    for i, a in enumerate(arrays):
        k = slot.get(id(a))
        if k is None:
            k = slot[id(a)] = len(distinct)
            distinct.append(a)
        which[i] = k
    return distinct, which


def _scaled_rows(
    distinct: list[np.ndarray],
    which: np.ndarray,
    size: np.ndarray,
    scale: np.ndarray | None = None,
    cap: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Per entry ``i``, ``scale[i] * min(size[i] * distinct[which[i]], cap[i])`` (without
    the scale or the cap when None), computed as one 2-D operation per distinct array."""
    out: list[np.ndarray] = [np.empty(0)] * len(which)
    for k, a in enumerate(distinct):
        at = np.flatnonzero(which == k)
        block = size[at, None] * a[None, :]
        if cap is not None:
            block = np.minimum(block, cap[at, None])
        if scale is not None:
            block = scale[at, None] * block
        for i, row in zip(at.tolist(), block, strict=True):
            out[i] = row
    return out


def group_values(problem: Problem, rates: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Value of each group at each of its candidate limits.

    Args:
        problem: The problem.
        rates: Per group, rate per GPU at each candidate (default: the group's curve).

    Returns:
        Per group, ``priority * min(size * rate, demand share) / usable rate of the job``.
    """
    groups = problem.groups
    rates = rates if rates is not None else [g.curve.rate for g in groups]
    if not groups:
        return []
    distinct, which = _per_distinct(rates)
    tops = np.array([float(np.max(r)) for r in distinct])[which]
    size = np.array([g.size for g in groups], dtype=float)
    job_pos: dict[str, int] = {}
    job_of = np.array([job_pos.setdefault(g.job.job_id, len(job_pos)) for g in groups])
    group_full = size * tops
    # summed in group order, as the per-group loop did
    job_full = np.bincount(job_of, weights=group_full, minlength=len(job_pos))[job_of]
    demand = np.array(
        [np.nan if g.job.demand_units_per_s is None else g.job.demand_units_per_s for g in groups],
        dtype=float,
    )
    priority = np.array([g.job.priority for g in groups], dtype=float)
    has_demand = ~np.isnan(demand)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = demand * group_full / job_full
    cap = np.where(has_demand & (job_full > 0), np.minimum(group_full, share), group_full)
    usable = np.where(has_demand, np.minimum(job_full, demand), job_full)
    scale = np.divide(priority, usable, out=np.zeros(len(groups)), where=usable > 0)
    return _scaled_rows(distinct, which, size, scale, cap)


def plateau_index(values: np.ndarray) -> int:
    """First candidate reaching :data:`PLATEAU_FRAC` of the top value."""
    top = float(np.max(values))
    if top <= 0:
        return 0
    return int(np.argmax(values >= PLATEAU_FRAC * top))


def _hull(values: np.ndarray, costs: np.ndarray) -> list[int]:
    """Indices of the upper concave hull of (cost, value), from index 0, rising only."""
    points = [0]
    i = 0
    n = len(values)
    while i < n - 1:
        dc = costs[i + 1 :] - costs[i]
        dv = values[i + 1 :] - values[i]
        slope = np.where(dc > 0, dv / np.where(dc > 0, dc, 1.0), -np.inf)
        j = int(np.argmax(slope))
        if slope[j] <= 0:
            break
        i = i + 1 + j
        points.append(i)
    return points


def hull_segments(
    values: list[np.ndarray], costs: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Every group's upgrades along its concave hull of (cost, value).

    Returns:
        ``(group, from level, to level, value gained, cost)`` per upgrade, as arrays (None:
        no group can be upgraded).
    """
    parts: list[tuple[np.ndarray, ...]] = []
    by_len: dict[int, list[int]] = {}
    for g, v in enumerate(values):
        by_len.setdefault(len(v), []).append(g)
    for members in by_len.values():
        idx = np.asarray(members)
        v_all = np.stack([values[g] for g in members])
        c_all = np.stack([costs[g] for g in members])
        # the hull is invariant to scaling value or cost: one per distinct normalised curve
        v_top, c_top = v_all[:, -1:], c_all[:, -1:]
        keys = np.concatenate(
            (v_all / np.where(v_top == 0, 1.0, v_top), c_all / np.where(c_top == 0, 1.0, c_top)),
            axis=1,
        )
        first, inverse = _distinct_rows(keys)
        for u, at in enumerate(first.tolist()):
            hull = np.asarray(_hull(v_all[at], c_all[at]), dtype=int)
            if len(hull) < 2:
                continue
            rows = np.flatnonzero(inverse.ravel() == u)
            steps = len(hull) - 1
            parts.append(
                (
                    np.repeat(idx[rows], steps),
                    np.tile(hull[:-1], len(rows)),
                    np.tile(hull[1:], len(rows)),
                    (v_all[rows][:, hull[1:]] - v_all[rows][:, hull[:-1]]).ravel(),
                    (c_all[rows][:, hull[1:]] - c_all[rows][:, hull[:-1]]).ravel(),
                )
            )
    if not parts:
        return None
    g_arr, a_arr, b_arr, dv, dc = (np.concatenate(col) for col in zip(*parts, strict=True))
    order = np.lexsort((a_arr, g_arr))  # by group, then along its hull (as listed before)
    return g_arr[order], a_arr[order], b_arr[order], dv[order], dc[order]


def _distinct_rows(
    keys: np.ndarray, projection: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``keys``: the first row of each, and each row's distinct index.

    Rows are told apart by a random projection (a 1-D sort instead of a row sort), then
    checked against their representative exactly; a row that differs from it (a collision)
    becomes a distinct row of its own.
    """
    if projection is None:
        projection = np.asarray(np.random.default_rng(0).standard_normal(keys.shape[1]))
    _, first, inverse = np.unique(keys @ projection, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    differs = np.flatnonzero(~np.all(keys == keys[first[inverse]], axis=1))
    if differs.size:
        inverse[differs] = len(first) + np.arange(differs.size)
        first = np.concatenate((first, differs))
    return first, inverse


def greedy_levels(values: list[np.ndarray], costs: list[np.ndarray], budget_w: float) -> list[int]:
    """Maximise the summed value of one level per group with summed cost within budget.

    Greedy marginal-gain water-filling: start every group at level 0, then take upgrades
    in order of value per watt along each group's concave hull; when an upgrade no longer
    fits, the group takes the best smaller step that does and stops.

    Args:
        values: Per group, value at each level (levels in ascending cost).
        costs: Per group, cost at each level, watts.
        budget_w: Budget for the summed cost, watts.

    Returns:
        The level chosen per group.
    """
    levels = np.zeros(len(values), dtype=int)
    left = budget_w - sum(float(c[0]) for c in costs)
    if left <= 0 or not values:
        return levels.tolist()
    segments = hull_segments(values, costs)
    if segments is None:
        return levels.tolist()
    g_arr, a_arr, b_arr, dv, dc = segments
    order = np.argsort(-dv / dc, kind="stable")
    # along each hull slopes fall, so any prefix of this order is a valid set of upgrades
    spent = np.cumsum(dc[order])
    k = int(np.searchsorted(spent, left, side="right"))
    if k:
        np.maximum.at(levels, g_arr[order[:k]], b_arr[order[:k]])
        left -= float(spent[k - 1])
    rest = order[k:]
    rest = rest[(dc[rest] <= left) | (b_arr[rest] - a_arr[rest] > 1)]
    for s_idx in rest.tolist():
        g, a, b = int(g_arr[s_idx]), int(a_arr[s_idx]), int(b_arr[s_idx])
        if levels[g] != a:
            continue  # an earlier upgrade of this group did not fit: it stopped there
        if dc[s_idx] <= left:
            levels[g] = b
            left -= float(dc[s_idx])
            continue
        levels[g] = -1 - a  # blocked (decoded below)
        c = costs[g]
        fits = np.flatnonzero(c[a + 1 : b] - c[a] <= left)
        if fits.size:
            best = a + 1 + int(fits[np.argmax(values[g][a + 1 + fits])])
            if values[g][best] > values[g][a]:
                left -= float(c[best] - c[a])
                levels[g] = -1 - best
    return np.where(levels < 0, -1 - levels, levels).tolist()


def group_costs(groups: list[Group], limits: list[np.ndarray]) -> list[np.ndarray]:
    """Summed limits of each group at each candidate, watts."""
    if not groups:
        return []
    distinct, which = _per_distinct(limits)
    return _scaled_rows(distinct, which, np.array([g.size for g in groups], dtype=float))
