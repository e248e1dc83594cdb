"""Baselines: an equal split (as DCGM group capping does) and a static TDP-proportional one.

Both give idle GPUs their minimum limit and split the rest among busy GPUs, clamping to
each GPU's range (and its job's floor) and redistributing what clamping frees.
"""

from __future__ import annotations

import numpy as np

from scheduler.core.problem import Allocation, Problem, fill_level, no_locks


def _split(problem: Problem, weight: np.ndarray) -> np.ndarray:
    limits = problem.min_w.astype(float).copy()
    busy = problem.busy
    if not busy.any():
        return limits
    lo = problem.floor_w()[busy]
    hi = problem.max_w[busy]
    budget = problem.budget_w - float(np.sum(problem.min_w[~busy]))
    level = fill_level(lo, hi, weight[busy], budget)
    limits[busy] = np.clip(level * weight[busy], lo, hi)
    return limits


class UniformPolicy:
    """Busy GPUs share the budget equally (clamped to their ranges)."""

    name = "uniform"

    def allocate(self, problem: Problem) -> Allocation:
        """Equal split of the budget among busy GPUs."""
        n = len(problem.min_w)
        return Allocation(_split(problem, np.ones(n)), no_locks(n))


class TdpProportionalPolicy:
    """Busy GPUs get budget shares proportional to their TDP (clamped to their ranges)."""

    name = "tdp-proportional"

    def allocate(self, problem: Problem) -> Allocation:
        """TDP-proportional split of the budget among busy GPUs."""
        n = len(problem.min_w)
        return Allocation(_split(problem, problem.tdp_w.astype(float)), no_locks(n))
