"""Which greenllm node each Ray node is.

- The local cluster (``greenllm up`` started Ray): each configured node is its own Ray node,
  found by its custom resource ``greenllm-node:<name>``; the head node runs no agent.
- A joined cluster (``greenllm up --address``): every Ray node is a greenllm node. A node
  entry of cluster.yaml describes the Ray node its ``match`` names (IP address and/or host
  name), or without one the Ray node whose host name or IP address is the entry's name. A
  Ray node no entry describes becomes an NVML node named after its host name (its IP
  address when several Ray nodes share the host name, or the name is taken), provided Ray
  found a GPU on it; a name once given stays with the machine's address.

Nothing here calls Ray: :func:`ray_nodes` turns ``ray.nodes()`` into :class:`RayNode`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from greenllm.config import ClusterConfig, NodeConfig, NodeMatch

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
NODE_RESOURCE_PREFIX = "greenllm-node:"
#: Nodes discovered on a joined cluster, kept in the state directory across controller
#: restarts (``greenllm down`` forgets them).
DISCOVERED_FILE = "discovered-nodes.json"


@dataclass(frozen=True)
class RayNode:
    """An alive Ray node.

    Attributes:
        node_id: Ray's node id (hex).
        address: Its IP address.
        hostname: Its host name.
        resources: Its total resources (``GPU``, custom ones...).
    """

    node_id: str
    address: str
    hostname: str
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def gpu_count(self) -> float:
        """GPUs Ray found on it."""
        return self.resources.get("GPU", 0.0)


def ray_nodes(raw: list[dict[str, Any]]) -> list[RayNode]:
    """The alive nodes of a ``ray.nodes()`` answer, in its order."""
    return [
        RayNode(
            node_id=str(n["NodeID"]),
            address=str(n.get("NodeManagerAddress", "")),
            hostname=str(n.get("NodeManagerHostname", "")),
            resources={str(k): float(v) for k, v in (n.get("Resources") or {}).items()},
        )
        for n in raw
        if n.get("Alive")
    ]


def _same_host(a: str, b: str) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b or a.split(".")[0] == b or a == b.split(".")[0]


def describes(node: NodeConfig, ray_node: RayNode) -> bool:
    """Whether cluster.yaml entry ``node`` describes ``ray_node``."""
    match = node.match
    if match is None:
        return node.name == ray_node.address or _same_host(node.name, ray_node.hostname)
    if match.address is not None and match.address != ray_node.address:
        return False
    return match.hostname is None or _same_host(match.hostname, ray_node.hostname)


def name_from(text: str) -> str:
    """A valid node name made of ``text`` (an IPv6 address's colons become dashes)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", text).strip("-._")[:63]
    return name if _NAME.match(name) else "node"


class NodeMap:
    """Binds Ray nodes to greenllm nodes as they come and go.

    Args:
        config: The cluster config as written.
        joined: True for a joined Ray cluster, False for the local one.
        remembered: Nodes discovered earlier (kept across controller restarts).
    """

    def __init__(
        self, config: ClusterConfig, joined: bool, remembered: list[NodeConfig] | None = None
    ) -> None:
        self.config = config
        self.joined = joined
        configured = set(config.names())
        #: Nodes made for Ray nodes cluster.yaml does not describe, by name.
        self.discovered: dict[str, NodeConfig] = {
            n.name: n for n in remembered or [] if n.name not in configured
        }
        #: Greenllm node of each alive Ray node that has one, by Ray node id.
        self.bound: dict[str, str] = {}
        #: Ray nodes left without an agent, and why, by Ray node id.
        self.skipped: dict[str, str] = {}
        #: Problems worth telling the operator (each once).
        self.notes: list[str] = []
        self._noted: set[str] = set()

    def _note(self, text: str) -> None:
        if text not in self._noted:
            self._noted.add(text)
            self.notes.append(text)

    def nodes(self) -> list[NodeConfig]:
        """Every node: cluster.yaml's, then the discovered ones."""
        return [*self.config.nodes, *self.discovered.values()]

    def cluster_config(self) -> ClusterConfig:
        """The config with the discovered nodes added (what the controller runs with)."""
        if not self.discovered:
            return self.config
        data = self.config.model_dump(mode="json")
        data["nodes"] = [n.model_dump(mode="json") for n in self.nodes()]
        return ClusterConfig.model_validate(data)

    def update(self, alive: list[RayNode]) -> list[NodeConfig]:
        """Bind the alive Ray nodes; returns the nodes discovered by this call."""
        alive_ids = {n.node_id for n in alive}
        self.bound = {i: name for i, name in self.bound.items() if i in alive_ids}
        self.skipped = {}
        new: list[NodeConfig] = []
        for ray_node in alive:
            if ray_node.node_id in self.bound:
                continue
            name = self._bind_embedded(ray_node) if not self.joined else self._bind(ray_node, alive)
            if name is None:
                continue
            if name not in self.config.names() and name not in self.discovered:
                node = NodeConfig(
                    name=name, backend="nvml", match=NodeMatch(address=ray_node.address)
                )
                self.discovered[name] = node
                new.append(node)
            self.bound[ray_node.node_id] = name
        return new

    def dead(self, raw: list[dict[str, Any]], before: dict[str, str]) -> list[str]:
        """Greenllm nodes whose machine is gone: a Ray node they were bound to died, or (after
        a controller restart) ``ray.nodes()`` lists a dead Ray node that is theirs; never one
        an alive Ray node is bound to now.

        Args:
            raw: A ``ray.nodes()`` answer.
            before: :attr:`bound` before the last :meth:`update`.
        """
        alive_names = set(self.bound.values())
        gone = {name for node_id, name in before.items() if node_id not in self.bound}
        for n in raw:
            if n.get("Alive"):
                continue
            ray_node = RayNode(
                node_id=str(n.get("NodeID", "")),
                address=str(n.get("NodeManagerAddress", "")),
                hostname=str(n.get("NodeManagerHostname", "")),
                resources={str(k): float(v) for k, v in (n.get("Resources") or {}).items()},
            )
            name = self._owner(ray_node)
            if name is not None:
                gone.add(name)
        order = [n.name for n in self.nodes()]
        return [name for name in order if name in gone and name not in alive_names]

    def _owner(self, ray_node: RayNode) -> str | None:
        """The greenllm node a (dead) Ray node was, when it can be told (None: unknown)."""
        for key in ray_node.resources:
            if key.startswith(NODE_RESOURCE_PREFIX):
                name = key[len(NODE_RESOURCE_PREFIX) :]
                return name if name in self.config.names() else None
        if not self.joined:
            return None
        matches = [n.name for n in self.config.nodes if describes(n, ray_node)]
        matches += [
            n.name
            for n in self.discovered.values()
            if n.match is not None and n.match.address == ray_node.address
        ]
        return matches[0] if len(matches) == 1 else None

    def _bind_embedded(self, ray_node: RayNode) -> str | None:
        for key in ray_node.resources:
            if key.startswith(NODE_RESOURCE_PREFIX):
                name = key[len(NODE_RESOURCE_PREFIX) :]
                if name in self.config.names() and name not in self.bound.values():
                    return name
        self.skipped[ray_node.node_id] = "the local cluster's head node"
        return None

    def _bind(self, ray_node: RayNode, alive: list[RayNode]) -> str | None:
        taken = set(self.bound.values())
        for node in self.config.nodes:
            if describes(node, ray_node):
                if node.name not in taken:
                    return node.name
                self._note(
                    f"cluster.yaml node {node.name} also describes the Ray node at "
                    f"{ray_node.address} ({ray_node.hostname}); give it a match.address"
                )
        for node in self.discovered.values():
            match = node.match
            if match is not None and match.address == ray_node.address and node.name not in taken:
                return node.name
        if ray_node.gpu_count <= 0:
            self.skipped[ray_node.node_id] = (
                f"Ray node at {ray_node.address} ({ray_node.hostname}) has no GPU and no "
                "cluster.yaml entry: no agent"
            )
            self._note(self.skipped[ray_node.node_id])
            return None
        return self._new_name(ray_node, alive)

    def _new_name(self, ray_node: RayNode, alive: list[RayNode]) -> str:
        used = {n.name for n in self.nodes()} | set(self.bound.values())
        hostnames = Counter(n.hostname.lower() for n in alive)
        candidates = []
        if ray_node.hostname and hostnames[ray_node.hostname.lower()] == 1:
            candidates.append(name_from(ray_node.hostname.split(".")[0]))
        candidates.append(name_from(ray_node.address))
        for candidate in candidates:
            if candidate not in used:
                return candidate
        base = candidates[-1][:58]
        suffix = 2
        while f"{base}-{suffix}" in used:
            suffix += 1
        return f"{base}-{suffix}"
