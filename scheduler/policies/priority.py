"""priority: cap the lowest priorities first, never below a job's floor (as Meta's Dynamo).

Every busy GPU asks for the limit at which its job reaches full speed (its curve's
plateau: no watts for speed it cannot use). When the asks exceed the budget, jobs of the
lowest priority give power first, down to their floor (the job's ``floor_w``, or the
GPU's minimum limit), all of them by the same fraction of their headroom; then the next
priority, and so on. Within what is left, no job is capped.
"""

from __future__ import annotations

import numpy as np

from scheduler.core.problem import Allocation, Problem, no_locks
from scheduler.policies.planning import plateau_index


class PriorityPolicy:
    """Priority-ordered capping down to per-job floors."""

    name = "priority"

    def allocate(self, problem: Problem) -> Allocation:
        """Uncapped asks, then cut from the lowest priority up."""
        n = len(problem.min_w)
        limits = problem.min_w.astype(float).copy()
        floor = problem.floor_w()
        for g in problem.groups:
            limits[g.rows] = g.curve.limits_w[plateau_index(g.curve.rate)]
        excess = float(np.sum(limits)) - problem.budget_w
        for prio in sorted({g.job.priority for g in problem.groups}):
            if excess <= 0:
                break
            rows = np.concatenate([g.rows for g in problem.groups if g.job.priority == prio])
            head = limits[rows] - floor[rows]
            room = float(np.sum(head))
            if room <= 0:
                continue
            cut = min(1.0, excess / room)
            limits[rows] -= head * cut
            excess -= room * cut
        return Allocation(limits, no_locks(n))
