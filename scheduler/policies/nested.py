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
from scheduler.policies.planning import _hull


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
    k = _fitting_prefix(order, g_arr, dc, shares, left)
    for s_idx in order[:k].tolist():
        g = int(g_arr[s_idx])
        levels[g] = max(levels[g], int(b_arr[s_idx]))
        caps, frac = shares[g]
        left[caps] -= dc[s_idx] * frac
    blocked = np.zeros(len(values), dtype=bool)
    for s_idx in order[k:].tolist():
        g, a, b = int(g_arr[s_idx]), int(a_arr[s_idx]), int(b_arr[s_idx])
        if blocked[g] or levels[g] != a:
            continue
        caps, frac = shares[g]
        room = float(np.min(left[caps] / frac))  # this group's most watts, all caps held
        if dc[s_idx] <= room + EPS_W:
            levels[g] = b
            left[caps] -= dc[s_idx] * frac
            continue
        blocked[g] = True
        c = costs[g]
        fits = np.flatnonzero(c[a + 1 : b] - c[a] <= room + EPS_W)
        if fits.size:
            best = a + 1 + int(fits[np.argmax(values[g][a + 1 + fits])])
            if values[g][best] > values[g][a]:
                left[caps] -= (c[best] - c[a]) * frac
                levels[g] = best
    return levels.tolist()


def _fitting_prefix(
    order: np.ndarray,
    g_arr: np.ndarray,
    dc: np.ndarray,
    shares: list[tuple[np.ndarray, np.ndarray]],
    left: np.ndarray,
) -> int:
    """How many upgrades, in ``order``, fit every cap taken together (vectorised)."""
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
    return int(pos[over].min()) if over.any() else len(order)
