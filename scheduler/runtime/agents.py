"""One agent actor per greenllm node, placed on its Ray node by node affinity.

:class:`AgentWatcher` runs inside the controller actor: every :data:`POLL_S` it reads
``ray.nodes()``, binds new Ray nodes to greenllm nodes (:class:`NodeMap`) and starts the
agent of each node that has none, pinned with ``NodeAffinitySchedulingStrategy(soft=False)``.
A Ray node that joins later gets its agent within a poll or two; one that dies takes its
agent with it, and the controller is told that node is down (its machine is gone: counted at
its fail-safe limits, its shards placed elsewhere) until its agent registers again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from greenllm.config import ClusterConfig, NodeConfig
from greenllm.errors import GreenllmError
from greenllm.rpc.auth import Tokens
from greenllm.rpc.locate import RAY_NAMESPACE
from scheduler.runtime.nodemap import NodeMap, RayNode, ray_nodes

log = logging.getLogger(__name__)

RUNTIME_ENTRY_POINT_GROUP = "greenllm.runtime"
AGENT_ACTOR_PREFIX = "greenllm-agent-"
#: Seconds between two looks at the Ray cluster.
POLL_S = 2.0
#: How long an existing agent actor may take to say which node it runs on, seconds.
INFO_TIMEOUT_S = 10.0
#: The fail-safe limit handed to an agent whose GPUs cluster.yaml does not list, watts:
#: below every GPU's range, so each of its GPUs boots at its minimum limit.
MIN_BOOT_LIMIT_W = 1.0


def runtime_part(name: str) -> Any:
    """A node-side part the cluster runtime starts, from the ``greenllm.runtime`` entry
    point ``name`` (scheduler/ never imports workers/).

    Raises:
        GreenllmError: It is not installed.
    """
    for ep in entry_points(group=RUNTIME_ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    raise GreenllmError(f"no {name} runtime is installed (entry point greenllm.runtime:{name})")


def agent_actor_class() -> Any:
    """The agent actor class, from the ``greenllm.runtime`` entry point ``agent``."""
    return runtime_part("agent")


def agent_config(config: ClusterConfig, node: str, strip_tls: bool) -> ClusterConfig:
    """The config the agent of ``node`` gets.

    Args:
        config: The controller's config.
        node: The agent's node.
        strip_tls: Leave out ``auth.tls`` (its paths exist on the controller's machine only;
            the CA goes along instead).

    A node whose GPUs cluster.yaml does not list (an NVML node, or one discovered) has no
    static share of the budget: unless ``failsafe.limit_w`` is set, its GPUs boot at their
    minimum limits until the controller sends their share.
    """
    update: dict[str, Any] = {}
    if strip_tls:
        update["auth"] = config.auth.model_copy(update={"tls": None})
    if not config.node(node).gpus and config.failsafe.limit_w is None:
        update["failsafe"] = config.failsafe.model_copy(update={"limit_w": MIN_BOOT_LIMIT_W})
    return config.model_copy(update=update)


@dataclass(frozen=True)
class Handoff:
    """What every agent gets at start.

    Attributes:
        config: The cluster config as a document (the controller's, TLS paths removed when
            ``ca_pem`` replaces them).
        tokens: The cluster's secrets (None: auth is off); each agent gets its node's token.
        ca_pem: The CA certificate to trust (None: the config's TLS settings, or none).
        address: Where the controller listens.
    """

    config: dict[str, Any]
    tokens: Tokens | None
    ca_pem: bytes | None
    address: str


class AgentWatcher:
    """Keeps one agent per bound Ray node.

    Args:
        nodes: The node map (shared with the controller actor, under ``lock``).
        handoff: Builds what the agent of a node gets (called when it is started).
        on_new_nodes: Told of nodes discovered, before their agents start.
        lock: Guards ``nodes``.
        poll_s: Seconds between polls.
        on_dead_nodes: Told, every poll, of the nodes whose Ray node died (see
            :meth:`NodeMap.dead`).
    """

    def __init__(
        self,
        nodes: NodeMap,
        handoff: Callable[[str], Handoff],
        on_new_nodes: Callable[[list[NodeConfig]], None],
        lock: threading.RLock,
        poll_s: float = POLL_S,
        on_dead_nodes: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.nodes = nodes
        self._handoff = handoff
        self._on_new_nodes = on_new_nodes
        self._on_dead_nodes = on_dead_nodes
        self._lock = lock
        self._poll_s = poll_s
        #: Ray node id of each started agent, by node name.
        self.started: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="greenllm-agents", daemon=True)

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop polling (agents already started keep running)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # one bad poll (GCS busy, a node going) must not stop it
                log.exception("watching the Ray nodes failed; trying again")
            self._stop.wait(self._poll_s)

    def poll(self) -> None:
        """Bind the alive Ray nodes and start the agents that are missing."""
        import ray

        raw = ray.nodes()
        alive = ray_nodes(raw)
        with self._lock:
            before = dict(self.nodes.bound)
            new = self.nodes.update(alive)
            for note in self.nodes.notes:
                log.warning("%s", note)
            self.nodes.notes.clear()
            bound = dict(self.nodes.bound)
            dead = self.nodes.dead(raw, before)
        if new:
            log.info("Ray nodes joined: %s", ", ".join(n.name for n in new))
            self._on_new_nodes(new)
        if dead and self._on_dead_nodes is not None:
            self._on_dead_nodes(dead)
        by_id = {n.node_id: n for n in alive}
        self.started = {k: v for k, v in self.started.items() if v in by_id}
        for node_id, name in bound.items():
            if self._stop.is_set():
                return
            if self.started.get(name) != node_id:
                self._ensure(name, by_id[node_id])

    def _ensure(self, name: str, ray_node: RayNode) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor_name = AGENT_ACTOR_PREFIX + name
        try:
            existing = ray.get_actor(actor_name, namespace=RAY_NAMESPACE)
        except ValueError:
            existing = None
        if existing is not None:
            info: Any = None
            try:
                info = ray.get(existing.info.remote(), timeout=INFO_TIMEOUT_S)
            except Exception:  # dead, or on a node that is going
                info = None
            if info is not None and info.get("node_id") == ray_node.node_id:
                self.started[name] = ray_node.node_id
                return
            log.warning("agent %s belongs to a Ray node that is gone; replacing it", actor_name)
            ray.kill(existing, no_restart=True)
            return  # its name is free by the next poll
        handoff = self._handoff(name)
        token = handoff.tokens.node(name) if handoff.tokens is not None else None
        try:
            agent_actor_class().options(
                name=actor_name,
                namespace=RAY_NAMESPACE,
                lifetime="detached",
                scheduling_strategy=NodeAffinitySchedulingStrategy(ray_node.node_id, soft=False),
            ).remote(handoff.config, name, token, handoff.ca_pem, handoff.address)
        except ValueError as exc:  # the name is still held by the agent just killed
            log.info("agent %s not started yet: %s", actor_name, exc)
            return
        log.info("started the agent of %s on %s (%s)", name, ray_node.address, ray_node.hostname)
        self.started[name] = ray_node.node_id
