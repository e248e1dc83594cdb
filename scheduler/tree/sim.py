"""A controller tree in the simulator: a child controller per child domain of the top power
domain, each the ordinary shell driving its own nodes (a :class:`~scheduler.sim.engine.Simulation`
of its subtree), and the parent (:class:`~scheduler.tree.parent.ParentController`) moving
budget between them, all on one virtual clock.

What each level knows: a child knows its nodes, jobs and grant (its budget) and holds its
subtree's domains as any controller does; the parent knows only each child's report (the
limits its GPUs may hold, its demand curve) and its own domain's limit and the cluster
budget. A cut at the top reaches the children at the next parent step (at once when the
cut is the parent's own) and their GPUs within a child's transition window after that.

Jobs are given to children when the scenario is split: each job entry's copies are spread
over the children that have enough GPUs of an allowed type, in proportion to how many
copies each can hold (``NAME.CHILD``). Jobs do not move between children afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenllm.devices.catalog import get_spec
from greenllm.power_domains import resolve
from scheduler.core.demand import DemandCurve
from scheduler.core.types import DecideConfig
from scheduler.policies import load_policy
from scheduler.shell.observed import gpu_states
from scheduler.sim.engine import Simulation
from scheduler.sim.plane import transition_window_s
from scheduler.sim.results import Allowance
from scheduler.sim.scenario import Scenario, ScenarioJob, SimNode
from scheduler.tree.parent import ChildReport, ParentController, allocate_grants

#: Points of each child's demand curve.
CURVE_POINTS = 64
#: Child control periods between parent steps.
PARENT_PERIODS = 2


@dataclass
class TreeResult:
    """What the tree run measured at the parent's level.

    Attributes:
        times_s: Step end times, seconds.
        held_w: Per step, the limits every child's GPUs really held, summed, watts.
        usable_w: Per step, the parent's usable watts.
        over_s: Seconds the children's real limits summed above what the parent allowed
            (its usable watts, the highest over a parent period plus a child's window
            after a change).
        cuts: Per cut of the parent's watts: ``(time, seconds until the children's real
            limits fit it, seconds until every child's fit its grant)``.
    """

    times_s: list[float] = field(default_factory=list)
    held_w: list[float] = field(default_factory=list)
    usable_w: list[float] = field(default_factory=list)
    over_s: float = 0.0
    cuts: list[tuple[float, float | None, float | None]] = field(default_factory=list)


class TreeSimulation:
    """A parent and one child controller per child of the top domain.

    Args:
        scenario: A scenario with one top power domain that has at least two children.
        base_dir: Folder relative paths in the scenario are taken from.
        policy_name: The children's allocation policy (one that values watts:
            max-throughput).
        parent_periods: Child control periods between parent steps.
        parent_outages: ``(at_s, down_s)``: the parent is down from ``at_s`` for ``down_s``
            seconds (its children keep their grants); it comes back knowing nothing but
            each child's budget in force, as the live parent does.
    """

    def __init__(
        self,
        scenario: Scenario,
        base_dir: Path,
        policy_name: str = "max-throughput",
        parent_periods: int = PARENT_PERIODS,
        parent_outages: list[tuple[float, float]] | None = None,
    ) -> None:
        if len(scenario.power_domains) != 1 or len(scenario.power_domains[0].domains) < 2:
            raise ValueError(
                "a controller tree needs power_domains with one top domain of two or more "
                "child domains (a child controller each)"
            )
        self.sc = scenario
        top = scenario.power_domains[0]
        names = [n for node in scenario.nodes for n in node.names()]
        layout = resolve(scenario.power_domains, names)
        self.child_names = [d.name for d in top.domains]
        members = {d.name: layout.nodes_under(layout.names.index(d.name)) for d in top.domains}
        self.types = {n: node.gpu_types() for node in scenario.nodes for n in node.names()}
        floors = [
            sum(get_spec(t).min_power_limit_w for n in members[c] for t in self.types[n])
            for c in self.child_names
        ]
        sum_tdp_w = scenario.sum_tdp_w()
        self._top_usable_w = top.usable_w()
        self._budget_usable_w = scenario.budget.watts(sum_tdp_w) - scenario.budget.reserve_w
        caps = [d.usable_w() for d in top.domains]
        usable_w = min(self._top_usable_w, self._budget_usable_w)
        start = allocate_grants([DemandCurve((f,), (0.0,)) for f in floors], caps, usable_w)
        self.parent = ParentController(list(self.child_names), caps, usable_w, start)
        jobs = _spread_jobs(scenario.jobs, {c: members[c] for c in self.child_names}, self.types)
        config = DecideConfig(demand_points=CURVE_POINTS)
        self.children: dict[str, Simulation] = {}
        for i, child in enumerate(top.domains):
            sub = _child_scenario(scenario, child.name, members[child.name], jobs[child.name])
            sub = sub.model_copy(
                update={"budget": sub.budget.model_copy(update={"budget_w": start[i]})}
            )
            self.children[child.name] = Simulation(
                sub, base_dir, load_policy(policy_name), policy_name, decide_config=config
            )
        first = next(iter(self.children.values()))
        self.step_s = first.plane.step_s
        self.period_steps = max(
            1, round(parent_periods * first.plane.control_period_s / self.step_s)
        )
        self.window_s = parent_periods * first.plane.control_period_s + transition_window_s(
            first.plane
        )
        self.result = TreeResult()
        self._allowance = Allowance([(0.0, usable_w)])
        self._cuts: list[list[Any]] = []
        self._parent_changes = sorted(
            (c.t_s, c) for c in scenario.budget.schedule if c.domain in (None, top.name)
        )
        self.parent_outages = list(parent_outages or [])
        self._parent_down = False
        self.k = 0

    def _parent_up(self, t: float) -> bool:
        """Whether the parent runs at ``t``; one that comes back starts from the children's
        budgets in force."""
        down = any(at <= t < at + length for at, length in self.parent_outages)
        if down and not self._parent_down:  # a cut nobody carries out stays in transition
            self._allowance.down(t, self.window_s)
        if self._parent_down and not down:
            self.parent.grants_w = [c.budget_w for c in self.children.values()]
            self.parent._held_w = None
            self._allowance.up(t, 0.0, self.window_s)
        self._parent_down = down
        return not down

    def _parent_usable_at(self, t: float) -> float:
        top_w, budget_w = self._top_usable_w, self._budget_usable_w
        for at_s, change in self._parent_changes:
            if at_s > t + 1e-9:
                break
            if change.domain is None:
                budget_w = change.watts(self.sc.sum_tdp_w()) - self.sc.budget.reserve_w
            else:
                top = self.sc.power_domains[0]
                top_w = (change.budget_w or top.limit_w) - top.reserve_w
        return min(top_w, budget_w)

    def reports(self) -> dict[str, ChildReport]:
        """Each running child's report: the limits its GPUs may hold and its demand."""
        out = {}
        for name, child in self.children.items():
            shell = child.shell
            if shell is None or shell.last_actions.demand is None:
                continue
            gpus = gpu_states(shell.nodes, {}, set(), shell.boot_limit_w)
            held_w = sum(g.accounted_limit_w for g in gpus)
            out[name] = ChildReport(held_w, shell.last_actions.demand)
        return out

    def _parent_step(self, t: float) -> None:
        before = list(self.parent.grants_w)
        changed = self.parent.step(self.reports())
        for name, grant_w in changed.items():
            i = self.child_names.index(name)
            if not self.children[name].apply_budget(t, grant_w):
                self.parent.grants_w[i] = before[i]  # no controller took it: nothing changed

    def step(self) -> None:
        """One step of virtual time: the parent (when due, or at once after a cut of its
        watts), then every child."""
        t = self.k * self.step_s
        usable_w = self._parent_usable_at(t)
        cut = usable_w < self.parent.usable_w - 1e-9
        if abs(usable_w - self.parent.usable_w) > 1e-9:
            self._allowance.change(t, self.parent.usable_w, usable_w)
            if cut:
                self._cuts.append([t, usable_w, None, None])
            self.parent.usable_w = usable_w
        if self._parent_up(t) and (cut or self.k % self.period_steps == 0):
            self._parent_step(t)
        for child in self.children.values():
            child.step()
        self._record(t + self.step_s)
        self.k += 1

    def _record(self, t: float) -> None:
        held = sum(c.real_limits_w() for c in self.children.values())
        r = self.result
        r.times_s.append(t)
        r.held_w.append(held)
        r.usable_w.append(self.parent.usable_w)
        if held > self._allowance.allowed_w(t, self.window_s) + 1e-6:
            r.over_s += self.step_s
        for cut in self._cuts:
            at_s, watts, fit_s, children_s = cut
            if fit_s is None and held <= watts + 1e-6:
                cut[2] = t - at_s
            grants_fit = all(
                c.real_limits_w() <= self.parent.grants_w[i] + 1e-6
                for i, c in enumerate(self.children.values())
            )
            if cut[2] is not None and children_s is None and grants_fit:
                cut[3] = t - at_s
        r.cuts = [(c[0], c[2], c[3]) for c in self._cuts]

    def summary(self) -> dict[str, Any]:
        """The tree.json document: the parent's figures and each child's summary.json."""
        r = self.result
        return {
            "scenario": self.sc.name,
            "parent": {
                "children": self.child_names,
                "grants_w": dict(zip(self.child_names, self.parent.grants_w, strict=True)),
                "usable_w": self.parent.usable_w,
                "over_s": r.over_s,
                "transition_window_s": self.window_s,
                "cuts": [
                    {"t_s": at_s, "site_fit_s": fit_s, "children_fit_s": children_s}
                    for at_s, fit_s, children_s in r.cuts
                ],
            },
            "children": {name: c.result.summary(None) for name, c in self.children.items()},
        }

    def run(self) -> Iterator[float]:
        """Simulate the whole scenario, yielding the virtual time after each parent period."""
        steps = math.ceil(self.sc.duration_s / self.step_s - 1e-9)
        while self.k < steps:
            self.step()
            if self.k % self.period_steps == 0:
                yield self.k * self.step_s
        for child in self.children.values():
            child.finish()


def _capacity(job: ScenarioJob, nodes: list[str], types: dict[str, list[str]]) -> int:
    """How many copies of ``job`` the GPUs of ``nodes`` can hold at once."""
    allowed = set(job.gpu_types) if job.gpu_types else None
    free = sum(1 for n in nodes for t in types[n] if allowed is None or t in allowed)
    return free // max(1, job.shards)


def _spread_jobs(
    jobs: list[ScenarioJob], members: dict[str, list[str]], types: dict[str, list[str]]
) -> dict[str, list[ScenarioJob]]:
    """Each job entry's copies over the children that can run it, by their capacity."""
    out: dict[str, list[ScenarioJob]] = {c: [] for c in members}
    for job in jobs:
        room = {c: _capacity(job, nodes, types) for c, nodes in members.items()}
        total = sum(room.values())
        if total == 0:
            raise ValueError(f"job {job.name!r}: no child domain has GPUs for it")
        left = job.sim.count
        shares = {c: job.sim.count * r // total for c, r in room.items()}
        left -= sum(shares.values())
        for c in sorted(room, key=lambda c: -room[c]):
            if left <= 0:
                break
            if room[c] > 0:
                shares[c] += 1
                left -= 1
        for c, count in shares.items():
            if count > 0:
                sim = job.sim.model_copy(update={"count": count})
                out[c].append(job.model_copy(update={"name": f"{job.name}.{c}", "sim": sim}))
    return out


def _child_scenario(
    sc: Scenario, child: str, nodes: list[str], jobs: list[ScenarioJob]
) -> Scenario:
    """The scenario of one child controller: its nodes, jobs, subtree and failures."""
    mine = set(nodes)
    entries: list[SimNode] = []
    for spec in sc.nodes:
        names = spec.names()
        if all(n in mine for n in names):
            entries.append(spec)
        else:
            entries += [spec.model_copy(update={"name": n, "count": 1}) for n in names if n in mine]
    top = sc.power_domains[0]
    subtree = next(d for d in top.domains if d.name == child)
    inside = {d.name for d, _ in subtree.walk()}
    schedule = [c for c in sc.budget.schedule if c.domain in inside]
    return Scenario.model_validate(
        {
            "name": f"{sc.name}/{child}",
            "duration_s": sc.duration_s,
            "seed": sc.seed,
            "policy": sc.policy,
            "nodes": [e.model_dump() for e in entries],
            "budget": {
                "budget_w": subtree.usable_w(),
                "reserve_w": 0.0,
                "schedule": [c.model_dump() for c in schedule],
            },
            "jobs": [j.model_dump(exclude_none=True) for j in jobs],
            "failures": [f.model_dump() for f in sc.failures if f.node in mine],
            "controller_restarts": [r.model_dump() for r in sc.controller_restarts],
            "control": sc.control.model_dump(),
            "power_domains": [subtree.model_dump()],
        }
    )
