"""Cuts the GPUs cannot meet: how many watts they hold above the budget, which GPUs hold
more than planned, and why.

Two figures:

* the shortfall now: the limits as accounted (what the GPUs may really hold) less
  ``budget - reserve``, when positive (status, the ``greenllm_budget_shortfall_watts``
  metric);
* the shortfall a budget leaves once every GPU that can lower does: each LIVE GPU at its
  minimum limit, or at the limit it refused to go below; a GPU of a stale or lost node at
  what it is accounted at (its highest limit). SetBudget answers with it, so an operator
  whose cut cannot be met learns so at once.

In both, a GPU of a node never seen (not registered, nothing persisted) counts at its
minimum limit: it is accounted at its maximum for safety, but nothing says it holds that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from greenllm.devices.catalog import get_spec
from scheduler.core.lifecycle import NodePhase
from scheduler.core.types import GPUState

if TYPE_CHECKING:
    from scheduler.shell.controller import ControllerShell

#: Slack below which watts above a plan or a budget are not reported, watts.
SLACK_W = 0.5
#: GPUs named in a reason at most.
NAMED_GPUS = 8


def above_plan(shell: ControllerShell, g: GPUState) -> tuple[float, str]:
    """Watts GPU ``g`` is accounted at above the limit last commanded to it, and why.

    Returns:
        ``(watts, reason)``; ``(0.0, "")`` when it holds no more than planned.
    """
    node = shell.nodes[g.node]
    record = node.gpus[g.index] if g.index < len(node.gpus) else None
    if record is None:
        return 0.0, ""
    planned_w = record.asked_w if record.asked_w is not None else g.accounted_limit_w
    over_w = g.accounted_limit_w - planned_w
    if over_w <= SLACK_W:
        return 0.0, ""
    if node.phase is not NodePhase.LIVE:
        return over_w, (
            f"node {node.phase.value}: counted at the highest limit it may hold "
            f"({g.accounted_limit_w:g} W)"
        )
    if record.refused_w is not None:
        return over_w, f"refused a lowering to {planned_w:g} W ({record.refused_reason})"
    if record.pending_limits_w:
        return over_w, f"lowering to {planned_w:g} W not acked yet"
    return over_w, f"holds {g.accounted_limit_w:g} W, above the {planned_w:g} W commanded"


def _seen(shell: ControllerShell, g: GPUState) -> bool:
    """Whether the controller knows GPU ``g`` (registered, or its limits persisted): one of
    a node never seen is accounted at its maximum for safety, but nothing says it holds
    anything, so the shortfall counts it at its minimum."""
    return g.index < len(shell.nodes[g.node].gpus)


def shortfall_now_w(shell: ControllerShell, gpus: tuple[GPUState, ...] | list[GPUState]) -> float:
    """Watts the accounted limits exceed ``budget - reserve`` by (0 when within; GPUs of
    nodes never seen at their minimum limit)."""
    held_w = sum(
        g.accounted_limit_w if _seen(shell, g) else get_spec(g.gpu_type).min_power_limit_w
        for g in gpus
    )
    over_w = held_w - shell.usable_w
    return over_w if over_w > SLACK_W else 0.0


def least_reachable(shell: ControllerShell, gpus: list[GPUState]) -> tuple[float, list[str]]:
    """The least the accounted limits can come down to, watts, and the GPUs that hold
    them up (above their minimum limit), with why.

    A LIVE GPU can go down to its minimum limit, or to the limit it refused to go below;
    a GPU of a node that is not LIVE stays counted at what it is accounted at; one of a
    node never seen counts at its minimum (nothing says it holds more).
    """
    total_w, why = 0.0, []
    for g in gpus:
        node = shell.nodes[g.node]
        record = node.gpus[g.index] if g.index < len(node.gpus) else None
        if record is None:
            total_w += g.min_limit_w or get_spec(g.gpu_type).min_power_limit_w
            continue
        if g.stale:
            total_w += g.accounted_limit_w
            if g.accounted_limit_w > g.min_limit_w + SLACK_W:
                why.append(
                    f"{g.node}/{g.index} at {g.accounted_limit_w:g} W (node {node.phase.value})"
                )
            continue
        least_w = g.min_limit_w
        if record.refused_w is not None and record.refused_w > least_w:
            least_w = record.refused_w
            why.append(
                f"{g.node}/{g.index} at {least_w:g} W (refused lower: {record.refused_reason})"
            )
        total_w += least_w
    return total_w, why


def budget_shortfall(shell: ControllerShell, domain: str = "") -> tuple[float, str]:
    """What the budget in force (or power domain ``domain``'s limit) leaves over once every
    GPU (of that domain) that can lower does.

    Returns:
        ``(watts, reason)``; ``(0.0, "")`` when the budget can be met.
    """
    gpus = list(shell.observed(shell.clock()).gpus)
    usable_w = shell.usable_w
    if domain:
        limit_w, reserve_w = shell.domain_limits_w[domain]
        usable_w = limit_w - reserve_w
        at = shell.layout.names.index(domain)
        gpus = [g for g in gpus if at in shell.layout.chain(g.node)]
    least_w, why = least_reachable(shell, gpus)
    over_w = least_w - usable_w
    if over_w <= SLACK_W:
        return 0.0, ""
    named = "; ".join(why[:NAMED_GPUS]) + (
        f"; and {len(why) - NAMED_GPUS} more" if len(why) > NAMED_GPUS else ""
    )
    reason = (
        f"the GPUs cannot come below {least_w:g} W, {over_w:g} W above the "
        f"{usable_w:g} W usable: {named or 'every GPU at its minimum limit'}"
    )
    return over_w, reason
