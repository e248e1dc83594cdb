"""Fail-safe limits that follow the budget.

Each connected agent holds a fail-safe limit per GPU: what it falls back to when it loses
the controller (it only ever lowers a limit to it) and boots with. They are each GPU's static
share of the usable budget (:func:`greenllm.config.failsafe_shares_w`), over the GPUs' reported
ranges. Agents that cannot be told new limits now (disconnected) keep theirs: those are
taken out of the budget first, and the connected agents share what is left. Under power
domains the same holds in every domain: a node's share is the smallest of the cluster's
and each domain's above it, so the fail-safe limits of any domain's GPUs fit its limit.
"""

from __future__ import annotations

from greenllm.config import failsafe_shares_w
from greenllm.devices.catalog import get_spec
from greenllm.power_domains import DomainLayout
from scheduler.shell.nodes import NodeRecord


def failsafe_targets(
    nodes: dict[str, NodeRecord], usable_w: float, layout: DomainLayout | None = None
) -> dict[str, list[float]]:
    """Fail-safe limits each connected node's GPUs should hold, watts, by node.

    Args:
        nodes: Every node.
        usable_w: Budget minus reserve, watts.
        layout: The power tree with each domain's usable watts (None: none).
    """
    layout = layout or DomainLayout()
    size = 1 + len(layout.names)  # position 0: the cluster
    fixed_w = [0.0] * size
    lo_w = [0.0] * size
    hi_w = [0.0] * size
    flexible: list[NodeRecord] = []
    for node in nodes.values():
        above = [0] + [at + 1 for at in layout.chain(node.name)]
        if node.session is not None and node.gpus:
            flexible.append(node)
            for at in above:
                lo_w[at] += sum(g.min_power_limit_w for g in node.gpus)
                hi_w[at] += sum(g.max_power_limit_w for g in node.gpus)
            continue
        if node.gpus:
            held_w = sum(g.worst_failsafe_w() for g in node.gpus)
        else:
            held_w = sum(get_spec(t).max_power_limit_w for t in node.config_gpu_types)
        for at in above:
            fixed_w[at] += held_w
    caps_w = [usable_w, *layout.usable_w]
    fraction = [
        min(1.0, max(0.0, (cap - fixed - lo) / (hi - lo))) if hi > lo else 0.0
        for cap, fixed, lo, hi in zip(caps_w, fixed_w, lo_w, hi_w, strict=True)
    ]
    out: dict[str, list[float]] = {}
    for node in flexible:
        share = min(fraction[at] for at in [0] + [a + 1 for a in layout.chain(node.name)])
        lo = [g.min_power_limit_w for g in node.gpus]
        hi = [g.max_power_limit_w for g in node.gpus]
        out[node.name] = failsafe_shares_w(lo, hi, usable_w, share)
    return out
