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
    seg_g, seg_a, seg_b, seg_dv, seg_dc = [], [], [], [], []
    hulls: dict[bytes, np.ndarray] = {}
    for g, (v, c) in enumerate(zip(values, costs, strict=True)):
        # the hull is invariant to scaling value or cost: share it between alike groups
        key = (v / (v[-1] or 1.0)).tobytes() + (c / (c[-1] or 1.0)).tobytes()
        hull = hulls.get(key)
        if hull is None:
            hull = hulls[key] = np.asarray(_hull(v, c), dtype=int)
        if len(hull) < 2:
            continue
        seg_g.append(np.full(len(hull) - 1, g))
        seg_a.append(hull[:-1])
        seg_b.append(hull[1:])
        seg_dv.append(v[hull[1:]] - v[hull[:-1]])
        seg_dc.append(c[hull[1:]] - c[hull[:-1]])
    if not seg_g:
        return levels.tolist()
    g_arr, a_arr, b_arr = np.concatenate(seg_g), np.concatenate(seg_a), np.concatenate(seg_b)
    dc = np.concatenate(seg_dc)
    order = np.argsort(-np.concatenate(seg_dv) / dc, kind="stable")
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
    return [g.size * lim for g, lim in zip(groups, limits, strict=True)]
