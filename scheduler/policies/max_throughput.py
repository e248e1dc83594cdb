"""max-throughput: the most priority-weighted throughput the budget allows.

Each job's value is its rate as a fraction of what it can use, times its priority (see
:mod:`scheduler.policies.planning`). A training job is planned as a whole: all its
shards get one limit, so no shard is paid for speed the slowest one cannot use. Limits
past a curve's plateau buy nothing and are not given.
"""

from __future__ import annotations

import numpy as np

from scheduler.core.problem import Allocation, Problem, no_locks
from scheduler.policies.planning import greedy_levels, group_costs, group_values


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
        levels = greedy_levels(values, costs, budget)
        if groups:
            level_w = [float(g.curve.limits_w[k]) for g, k in zip(groups, levels, strict=True)]
            sizes = [g.size for g in groups]
            limits[np.concatenate([g.rows for g in groups])] = np.repeat(level_w, sizes)
        return Allocation(limits, no_locks(n))
