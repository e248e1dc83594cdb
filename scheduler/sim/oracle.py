"""The oracle (evaluation only): the best allocation per tick given the simulator's truth.

It solves max-throughput's problem (priority-weighted throughput relative to what each
job can use, see :mod:`scheduler.policies.planning`) exactly, as a multiple-choice
knapsack by dynamic programming over watts, with the workloads that really run (not the
ones jobs declare) and every distinct operating point of each GPU type (one per SM clock
step) as candidates. Policies plan with a learned model over a coarser grid; the gap
between their throughput and the oracle's is their loss to optimal.
"""

from __future__ import annotations

import math

import numpy as np

from greenllm.devices import physics
from greenllm.devices.catalog import get_spec
from scheduler.core.problem import Allocation, Group, Problem, no_locks
from scheduler.policies.planning import group_values
from scheduler.sim.scenario import Scenario, ScenarioJob

ORACLE_NAME = "oracle"
#: Largest DP table, cells (the watt resolution coarsens beyond it).
MAX_CELLS = 200_000


class OraclePolicy:
    """Exact per-tick optimum on the true curves (simulator only)."""

    name = ORACLE_NAME

    def __init__(self, jobs: dict[str, ScenarioJob]) -> None:
        self._jobs = jobs
        self._cache: dict[tuple[str, physics.Workload, float], tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def for_scenario(cls, scenario: Scenario) -> OraclePolicy:
        """An oracle knowing every job of ``scenario`` (and what truly runs)."""
        return cls({job_id: job for job in scenario.jobs for job_id in job.ids()})

    def _options(self, g: Group) -> tuple[np.ndarray, np.ndarray]:
        spec = get_spec(g.gpu_type)
        declared = g.job.workload
        # the controller names a job <name>-<submission number>
        job = self._jobs.get(g.job.job_id.rpartition("-")[0])
        true = job.true_workload(declared.kind) if job is not None else declared
        key = (g.gpu_type, true, g.lo_w)
        if key not in self._cache:
            clocks = spec.supported_sm_clocks_mhz()
            power = [math.ceil(physics.power_w(spec, true, c)) for c in clocks]
            limits = np.unique(np.clip([g.lo_w, g.hi_w, *power], g.lo_w, g.hi_w))
            rates = np.array(
                [physics.operating_point(spec, true, float(lim)).throughput for lim in limits]
            )
            self._cache[key] = (limits, rates)
        return self._cache[key]

    def allocate(self, problem: Problem) -> Allocation:
        """Exact multiple-choice knapsack over every group's operating points."""
        n = len(problem.min_w)
        limits = problem.min_w.astype(float).copy()
        groups = problem.groups
        if not groups:
            return Allocation(limits, no_locks(n))
        options = [self._options(g) for g in groups]
        values = group_values(problem, rates=[r for _, r in options])
        base = sum(g.size * float(lim[0]) for g, (lim, _) in zip(groups, options, strict=True))
        spare = problem.budget_w - float(np.sum(problem.min_w[~problem.busy])) - base
        choice = [0] * len(groups)
        if spare > 0:
            res = max(1.0, spare / MAX_CELLS)
            cells = int(spare // res)
            dp = np.zeros(cells + 1)
            picks = []
            shifts = []
            for g, (lim, _), val in zip(groups, options, values, strict=True):
                shift = np.ceil(g.size * (lim - lim[0]) / res).astype(int)
                new = np.full(cells + 1, -np.inf)
                pick = np.zeros(cells + 1, dtype=int)
                for o in range(len(lim)):
                    s = int(shift[o])
                    if s > cells:
                        continue
                    cand = np.full(cells + 1, -np.inf)
                    cand[s:] = dp[: cells + 1 - s] + val[o]
                    better = cand > new
                    new[better] = cand[better]
                    pick[better] = o
                dp = new
                picks.append(pick)
                shifts.append(shift)
            b = cells
            for k in range(len(groups) - 1, -1, -1):
                o = int(picks[k][b])
                choice[k] = o
                b -= int(shifts[k][o])
        for g, (lim, _), o in zip(groups, options, choice, strict=True):
            limits[g.rows] = lim[o]
        return Allocation(limits, no_locks(n))
