"""The power delivery tree of cluster.yaml (``power_domains``) resolved against its nodes.

A datacenter's power is a tree: a site or hall budget, and below it rows, racks and PDUs
with breakers of their own. Each domain caps the limits its GPUs may hold (``limit_w -
reserve_w``); every node hangs under exactly one domain (its leaf). A child whose limit
exceeds its parent's, or children whose limits sum above it, are allowed
(oversubscription: the parent binds first) and reported by :func:`oversubscription`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from greenllm.config_sections import PowerDomain


@dataclass(frozen=True)
class DomainLayout:
    """The configured power tree with each domain's usable watts.

    Attributes:
        names: Domain names, parents before children.
        parent: Per domain, its parent's position in ``names`` (-1: a top domain).
        usable_w: Per domain, ``limit_w - reserve_w`` now, watts.
        node_domain: ``(node name, position of the domain feeding it directly)`` pairs.
    """

    names: tuple[str, ...] = ()
    parent: tuple[int, ...] = ()
    usable_w: tuple[float, ...] = ()
    node_domain: tuple[tuple[str, int], ...] = ()

    def with_usable(self, name: str, usable_w: float) -> DomainLayout:
        """The same tree with domain ``name``'s usable watts changed."""
        at = self.names.index(name)
        usable = list(self.usable_w)
        usable[at] = usable_w
        return DomainLayout(self.names, self.parent, tuple(usable), self.node_domain)

    @cached_property
    def domain_of_node(self) -> dict[str, int]:
        """Node name -> position of its leaf domain."""
        return dict(self.node_domain)

    def chain(self, node: str) -> list[int]:
        """Positions of the domains above ``node``, its leaf first (empty: no tree)."""
        at = self.domain_of_node.get(node, -1)
        out = []
        while at >= 0:
            out.append(at)
            at = self.parent[at]
        return out

    def nodes_under(self, at: int) -> list[str]:
        """Names of the nodes under domain ``at`` (its descendants' included)."""
        return [n for n, _ in self.node_domain if at in self.chain(n)]


def resolve(domains: Sequence[PowerDomain], node_names: Sequence[str]) -> DomainLayout:
    """Lay the tree out over the configured nodes.

    Args:
        domains: The top domains (``power_domains`` of cluster.yaml).
        node_names: Every configured node.

    Raises:
        ValueError: One line naming what is wrong: a duplicate domain, a node name or
            pattern matching no node, a node in two domains, or a node in none.
    """
    if not domains:
        return DomainLayout()
    flat = [item for top in domains for item in top.walk()]
    names = [d.name for d, _ in flat]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"power_domains: duplicate domain names: {', '.join(dupes)}")
    at = {name: i for i, name in enumerate(names)}
    known = set(node_names)
    where: dict[str, int] = {}
    for i, (domain, _) in enumerate(flat):
        for pattern in domain.nodes:
            hits = [pattern] if pattern in known else fnmatch.filter(node_names, pattern)
            if not hits:
                raise ValueError(
                    f"power_domains: domain {domain.name!r} names node {pattern!r}, "
                    "which matches no node in 'nodes'"
                )
            for node in hits:
                if node in where and where[node] != i:
                    raise ValueError(
                        f"power_domains: node {node!r} is in two domains "
                        f"({names[where[node]]!r} and {domain.name!r})"
                    )
                where[node] = i
    outside = [n for n in node_names if n not in where]
    if outside:
        shown = ", ".join(repr(n) for n in outside[:5]) + (" ..." if len(outside) > 5 else "")
        raise ValueError(
            f"power_domains: node {shown} is in no power domain (every node must be under "
            "one when a tree is given)"
        )
    return DomainLayout(
        names=tuple(names),
        parent=tuple(-1 if p is None else at[p] for _, p in flat),
        usable_w=tuple(d.usable_w() for d, _ in flat),
        node_domain=tuple((n, where[n]) for n in node_names),
    )


def oversubscription(domains: Sequence[PowerDomain]) -> list[str]:
    """One line per domain whose children may draw more than it allows (allowed: it binds
    before they do)."""
    out = []
    for top in domains:
        for domain, _ in top.walk():
            for child in domain.domains:
                if child.limit_w > domain.limit_w:
                    out.append(
                        f"domain {child.name!r} limit {child.limit_w:g} W exceeds its parent "
                        f"{domain.name!r} limit {domain.limit_w:g} W"
                    )
            total = sum(c.limit_w for c in domain.domains)
            if len(domain.domains) > 1 and total > domain.limit_w:
                out.append(
                    f"domain {domain.name!r} is oversubscribed: its children's limits sum "
                    f"to {total:g} W over its {domain.limit_w:g} W"
                )
    return out
