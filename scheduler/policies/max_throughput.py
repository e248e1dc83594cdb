"""max-throughput: the most priority-weighted throughput the budget allows.

Each job's value is its rate as a fraction of what it can use, times its priority (see
:mod:`scheduler.policies.planning`). A training job is planned as a whole: all its
shards get one limit, so no shard is paid for speed the slowest one cannot use. Limits
past a curve's plateau buy nothing and are not given. Under a power tree every upgrade
must also fit each domain above its GPUs (:mod:`scheduler.policies.nested`).
"""

from __future__ import annotations

import numpy as np

from scheduler.core.demand import DemandCurve
from scheduler.core.problem import Allocation, Problem, no_locks
from scheduler.policies.nested import group_shares, nested_levels
from scheduler.policies.planning import _hull, greedy_levels, group_costs, group_values


class MaxThroughputPolicy:
    """Greedy marginal-gain water-filling over discrete limit steps."""

    name = "max-throughput"

    def allocate(self, problem: Problem) -> Allocation:
        """Give watts where they add the most weighted throughput per watt."""
        n = len(problem.min_w)
        limits = problem.min_w.astype(float).copy()
        groups = problem.groups
        budget = problem.budget_w - float(np.sum(problem.min_w[~problem.busy]))
        values = group_values(problem)
        costs = group_costs(groups, [g.curve.limits_w for g in groups])
        if problem.caps is None:
            levels = greedy_levels(values, costs, budget)
        else:  # a power tree: every domain's remaining watts bound the upgrades under it
            caps = problem.caps
            shares = group_shares(caps, groups)
            for g, c in zip(groups, costs, strict=True):
                limits[g.rows] = c[0] / g.size
            left = caps.cap_w - caps.totals(limits)
            levels = nested_levels(values, costs, shares, left)
        if groups:
            level_w = [float(g.curve.limits_w[k]) for g, k in zip(groups, levels, strict=True)]
            sizes = [g.size for g in groups]
            limits[np.concatenate([g.rows for g in groups])] = np.repeat(level_w, sizes)
        return Allocation(limits, no_locks(n))

    def demand_curve(self, problem: Problem, points: int) -> DemandCurve:
        """Value of each total of watts, as :meth:`allocate` values them: every group's
        upgrades along its concave hull, steepest first, from every GPU at its floor.

        Args:
            problem: The problem (its GPUs are the live ones; ``budget_w`` does not matter).
            points: About how many points the curve keeps.
        """
        groups = problem.groups
        floor_w = float(np.sum(problem.floor_w()))
        values = group_values(problem)
        costs = group_costs(groups, [g.curve.limits_w for g in groups])
        dw, dv = [], []
        for v, c in zip(values, costs, strict=True):
            hull = np.asarray(_hull(v, c), dtype=int)
            dw.append(c[hull[1:]] - c[hull[:-1]])
            dv.append(v[hull[1:]] - v[hull[:-1]])
        if not dw:
            return DemandCurve((floor_w,), (0.0,))
        return DemandCurve.from_segments(floor_w, np.concatenate(dw), np.concatenate(dv), points)
