"""The parent of a live controller tree: the same :class:`~scheduler.tree.parent.ParentController`
the simulator runs, over child controllers reached through their gRPC cluster API.

Each child is an ordinary controller (``greenllm up`` / ``greenllm controller``) over its
subtree's nodes, with ``controller.demand_points`` > 0 so its status carries its demand
curve. Every period the parent reads each child's status (the limits its GPUs may hold,
its demand curve, its reserve), reallocates, and sets the changed children's budgets
(``SetBudget``: grant + the child's own reserve). A child that does not answer counts at the
larger of its grant and its last holding and keeps its grant; a SetBudget that fails leaves
the parent counting that child at its old grant.

The tree file (``greenllm tree run TREE``)::

    limit_w: 20000            # the parent's domain (its feed), watts
    reserve_w: 0
    period_s: 2.0             # seconds between reallocations
    children:
      - {name: row0, config: row0/cluster.yaml, limit_w: 12000}
      - {name: row1, config: row1/cluster.yaml, limit_w: 12000}

It is read again every period: edit ``limit_w`` to cut or raise the parent's watts (a file
that does not validate is reported in one line and the last good one kept).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from greenllm.config import ClusterConfig, load_cluster_config, load_yaml_mapping, validate
from greenllm.errors import GreenllmError
from greenllm.proto.v1 import cluster_pb2
from greenllm.rpc.client import ClusterClient, ControllerError
from scheduler.core.demand import DemandCurve
from scheduler.tree.parent import ChildReport, ParentController

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TreeChild(_Strict):
    """One child controller.

    Attributes:
        name: Its name (a domain's).
        config: Its cluster.yaml (where it listens, its tokens), relative to the tree file.
        limit_w: The most it may be given (its feed), watts.
    """

    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    config: Path
    limit_w: float = Field(gt=0, allow_inf_nan=False)


class TreeFile(_Strict):
    """A parent controller and its children.

    Attributes:
        limit_w: The parent's limit, watts.
        reserve_w: Kept below it, watts.
        period_s: Seconds between reallocations.
        children: The child controllers (two or more).
    """

    limit_w: float = Field(gt=0, allow_inf_nan=False)
    reserve_w: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    period_s: float = Field(default=2.0, gt=0, le=3600, allow_inf_nan=False)
    children: list[TreeChild] = Field(min_length=2)

    @model_validator(mode="after")
    def _consistent(self) -> TreeFile:
        names = [c.name for c in self.children]
        if len(set(names)) != len(names):
            raise ValueError("children: names must be unique")
        if self.reserve_w >= self.limit_w:
            raise ValueError(f"reserve_w {self.reserve_w:g} W is not below limit_w")
        return self


def load_tree(path: str | Path) -> TreeFile:
    """Load and validate a tree file; children's configs are taken from its folder.

    Raises:
        ConfigError: ``FILE: field.path: what is wrong``.
    """
    path = Path(path)
    tree = validate(TreeFile, load_yaml_mapping(path), str(path))
    children = [
        c if c.config.is_absolute() else c.model_copy(update={"config": path.parent / c.config})
        for c in tree.children
    ]
    return tree.model_copy(update={"children": children})


@dataclass
class Child:
    """A child as the parent reaches it.

    Attributes:
        name: Its name.
        client: Its cluster API.
        reserve_w: Its own reserve, watts (its budget is its grant plus this).
    """

    name: str
    client: ClusterClient
    reserve_w: float = 0.0


def report_of(status: cluster_pb2.ClusterStatus) -> ChildReport | None:
    """A child's report from its status (None: it reports no demand curve)."""
    if not status.demand_w:
        return None
    curve = DemandCurve(tuple(status.demand_w), tuple(status.demand_value))
    return ChildReport(status.accounted_power_limit_w, curve)


class ParentLoop:
    """Reallocate among live children every period.

    Args:
        children: The children, in the order of ``caps_w``.
        caps_w: Per child, the most it may be given, watts.
        usable_w: The parent's usable watts.
        on_change: Called with ``(child, old grant, new grant)`` for every grant sent.
    """

    def __init__(
        self,
        children: Sequence[Child],
        caps_w: Sequence[float],
        usable_w: float,
        on_change: Callable[[str, float, float], None] | None = None,
    ) -> None:
        self.children = list(children)
        self.on_change = on_change or (lambda _c, _o, _n: None)
        grants = []
        for child in self.children:
            status = child.client.get_status()
            child.reserve_w = status.reserve_w
            grants.append(status.budget_w - status.reserve_w)
        names = [c.name for c in self.children]
        self.parent = ParentController(names, list(caps_w), usable_w, grants)

    def step(self) -> dict[str, float]:
        """One reallocation; returns the grants sent, by child."""
        reports: dict[str, ChildReport] = {}
        for child in self.children:
            try:
                status = child.client.get_status()
            except ControllerError as exc:
                log.warning("child %s: %s", child.name, exc)
                continue
            child.reserve_w = status.reserve_w
            report = report_of(status)
            if report is None:
                log.warning(
                    "child %s reports no demand curve (controller.demand_points)", child.name
                )
                continue
            reports[child.name] = report
        before = list(self.parent.grants_w)
        changed = self.parent.step(reports)
        sent = {}
        for i, child in enumerate(self.children):
            if child.name not in changed:
                continue
            grant_w = changed[child.name]
            try:
                child.client.set_budget(grant_w + child.reserve_w)
            except ControllerError as exc:
                log.warning("child %s: grant %g W not sent: %s", child.name, grant_w, exc)
                self.parent.grants_w[i] = before[i]
                continue
            sent[child.name] = grant_w
            self.on_change(child.name, before[i], grant_w)
        return sent


def connect_children(tree: TreeFile) -> list[Child]:
    """A client per child, from its cluster.yaml.

    Raises:
        GreenllmError: A child's config does not load, or its controller cannot be reached.
    """
    out = []
    for c in tree.children:
        config: ClusterConfig = load_cluster_config(c.config)
        if config.controller.demand_points <= 0:
            raise GreenllmError(
                f"{c.config}: controller.demand_points must be > 0 for a child of a tree "
                "(its status then carries its demand curve)"
            )
        out.append(Child(c.name, ClusterClient(config)))
    return out
