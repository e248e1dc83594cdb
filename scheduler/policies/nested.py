"""Greedy marginal-value filling under nested caps (the power tree).

The caps of a power tree form a laminar family (two domains are nested or disjoint), so
the greedy that takes upgrades in order of value per watt and skips any that would break
a cap on the way up is the marginal-value allocation with every ancestor's remaining
capacity as a bound (the nested knapsack of Meta's Dynamo, where each level caps its
children). A group (one job's GPUs of one type) may span domains: an upgrade costs each
domain the watts of the group's GPUs inside it.
"""

from __future__ import annotations

import numpy as np

from scheduler.core.domains import EPS_W, Caps
from scheduler.core.problem import Group
from scheduler.policies.planning import hull_segments


def group_shares(caps: Caps, groups: list[Group]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per group, the caps above its GPUs and the fraction of its GPUs under each.

    Returns:
        Per group, ``(cap positions, fractions)``; the cluster (position 0) is always
        there with fraction 1.
    """
    if not groups:
        return []
    sizes = np.array([g.size for g in groups])
    gid = np.repeat(np.arange(len(groups)), sizes)
    leaf = caps.leaf[np.concatenate([g.rows for g in groups])]
    above = caps.ancestors(leaf)  # [row, depth]
    depth = above.shape[1]
    keep = above >= 0
    key = np.repeat(gid, depth)[keep.ravel()] * caps.size + above.ravel()[keep.ravel()]
    pairs, count = np.unique(key, return_counts=True)
    pair_gid, pair_cap = np.divmod(pairs, caps.size)
    frac = count / sizes[pair_gid]
    bounds = np.searchsorted(pair_gid, np.arange(len(groups) + 1))
    return [
        (pair_cap[a:b], frac[a:b])
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
    ]


def nested_levels(
    values: list[np.ndarray],
    costs: list[np.ndarray],
    shares: list[tuple[np.ndarray, np.ndarray]],
    left_w: np.ndarray,
) -> list[int]:
    """Maximise the summed value of one level per group with every cap's cost within it.

    Args:
        values: Per group, value at each level (levels in ascending cost).
        costs: Per group, its GPUs' summed limits at each level, watts.
        shares: Per group, the caps above it and the fraction of its cost each bears
            (:func:`group_shares`).
        left_w: Per cap, watts left once every group is at level 0.

    Returns:
        The level chosen per group.
    """
    levels = np.zeros(len(values), dtype=int)
    left = left_w.astype(float).copy()
    if not values or (left < -EPS_W).any():
        return levels.tolist()
    segments = hull_segments(values, costs)
    if segments is None:
        return levels.tolist()
    g_arr, a_arr, b_arr, dv, dc = segments
    order = np.argsort(-dv / dc, kind="stable")
    k, spent = _fitting_prefix(order, g_arr, dc, shares, left)
    if k:
        np.maximum.at(levels, g_arr[order[:k]], b_arr[order[:k]])
        left -= spent
    # the rest one upgrade at a time, in plain Python (a few caps per group: cheaper than
    # numpy calls on arrays of three)
    left_l = left.tolist()
    level_l = levels.tolist()
    blocked = [False] * len(values)
    pairs = [list(zip(caps.tolist(), frac.tolist(), strict=True)) for caps, frac in shares]
    rest = order[k:]
    for g, a, b, step_w in zip(
        g_arr[rest].tolist(),
        a_arr[rest].tolist(),
        b_arr[rest].tolist(),
        dc[rest].tolist(),
        strict=True,
    ):
        if blocked[g] or level_l[g] != a:
            continue
        mine = pairs[g]
        room = min(left_l[cap] / f for cap, f in mine)  # this group's most watts, caps held
        if step_w <= room + EPS_W:
            level_l[g] = b
            for cap, f in mine:
                left_l[cap] -= step_w * f
            continue
        blocked[g] = True
        c = costs[g]
        fits = np.flatnonzero(c[a + 1 : b] - c[a] <= room + EPS_W)
        if fits.size:
            best = a + 1 + int(fits[np.argmax(values[g][a + 1 + fits])])
            if values[g][best] > values[g][a]:
                for cap, f in mine:
                    left_l[cap] -= float(c[best] - c[a]) * f
                level_l[g] = best
    return level_l


def _fitting_prefix(
    order: np.ndarray,
    g_arr: np.ndarray,
    dc: np.ndarray,
    shares: list[tuple[np.ndarray, np.ndarray]],
    left: np.ndarray,
) -> tuple[int, np.ndarray]:
    """How many upgrades, in ``order``, fit every cap taken together (vectorised), and the
    watts they spend per cap."""
    n_caps = np.array([len(shares[g][0]) for g in range(len(shares))], dtype=int)
    per = n_caps[g_arr[order]]
    pos = np.repeat(np.arange(len(order)), per)
    cap = np.concatenate([shares[int(g)][0] for g in g_arr[order]]) if len(order) else pos
    frac = np.concatenate([shares[int(g)][1] for g in g_arr[order]]) if len(order) else pos
    spend = np.repeat(dc[order], per) * frac
    by = np.lexsort((pos, cap))
    cap, pos, spend = cap[by], pos[by], spend[by]
    starts = np.flatnonzero(np.r_[True, cap[1:] != cap[:-1]])
    run = np.cumsum(spend)
    base = np.repeat(run[starts] - spend[starts], np.diff(np.r_[starts, len(cap)]))
    over = (run - base) > left[cap] + EPS_W
    k = int(pos[over].min()) if over.any() else len(order)
    spent = np.bincount(cap[pos < k], weights=spend[pos < k], minlength=len(left))
    return k, spent
