"""Fail-safe limits that follow the budget.

Each connected agent holds a fail-safe limit per GPU: what it falls back to when it loses
the controller (it only ever lowers a limit to it) and boots with. They are each GPU's static
share of the usable budget (:func:`greenllm.config.failsafe_shares_w`), over the GPUs' reported
ranges. Agents that cannot be told new limits now (disconnected) keep theirs: those are
taken out of the budget first, and the connected agents share what is left.
"""

from __future__ import annotations

from greenllm.config import failsafe_shares_w
from greenllm.devices.catalog import get_spec
from scheduler.shell.nodes import NodeRecord


def failsafe_targets(nodes: dict[str, NodeRecord], usable_w: float) -> dict[str, list[float]]:
    """Fail-safe limits each connected node's GPUs should hold, watts, by node.

    Args:
        nodes: Every node.
        usable_w: Budget minus reserve, watts.
    """
    fixed_w = 0.0
    flexible: list[NodeRecord] = []
    for node in nodes.values():
        if node.session is not None and node.gpus:
            flexible.append(node)
        elif node.gpus:
            fixed_w += sum(g.worst_failsafe_w() for g in node.gpus)
        else:
            fixed_w += sum(get_spec(t).max_power_limit_w for t in node.config_gpu_types)
    lo = [g.min_power_limit_w for n in flexible for g in n.gpus]
    hi = [g.max_power_limit_w for n in flexible for g in n.gpus]
    shares = failsafe_shares_w(lo, hi, usable_w - fixed_w) if lo else []
    out: dict[str, list[float]] = {}
    at = 0
    for node in flexible:
        out[node.name] = shares[at : at + len(node.gpus)]
        at += len(node.gpus)
    return out
