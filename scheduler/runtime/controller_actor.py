"""The controller as a detached, named Ray actor that Ray restarts when it dies.

It runs on the machine ``greenllm up`` ran on (its state directory is there), publishes
where it listens (``info()``, and ``<state_dir>/controller.json``), and starts one agent
per Ray node (:class:`scheduler.runtime.agents.AgentWatcher`), handing each its
configuration, its node's token and the CA to trust. On a joined cluster it listens on its
node's address with TLS from the cluster's own CA.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import ray

from greenllm.config import ClusterConfig, NodeConfig
from greenllm.errors import GreenllmError
from greenllm.rpc.auth import Tokens, load_or_create_tokens
from greenllm.rpc.locate import CONTROLLER_ACTOR, RAY_NAMESPACE, remove_endpoint, write_endpoint
from greenllm.service.foreground import configure_logging
from greenllm.service.thread import BackgroundService
from scheduler.runtime.agents import AgentWatcher, Handoff, agent_config
from scheduler.runtime.ingress_keeper import IngressKeeper
from scheduler.runtime.listen import plan_listen
from scheduler.runtime.nodemap import DISCOVERED_FILE, NodeMap, ray_nodes
from scheduler.server.app import Controller
from scheduler.shell import operator
from scheduler.shell.errors import BadInput

log = logging.getLogger(__name__)

__all__ = ["CONTROLLER_ACTOR", "ControllerActor", "start_controller"]


def load_discovered(state_dir: Path) -> list[NodeConfig]:
    """The nodes discovered earlier (none when the file is absent or unreadable)."""
    try:
        docs = json.loads((state_dir / DISCOVERED_FILE).read_text())
        return [NodeConfig.model_validate(d) for d in docs]
    except (OSError, ValueError, TypeError):
        return []


def save_discovered(state_dir: Path, nodes: list[NodeConfig]) -> None:
    """Remember the discovered nodes."""
    path = state_dir / DISCOVERED_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps([n.model_dump(mode="json") for n in nodes], indent=2))
    tmp.replace(path)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class ControllerActor:
    """Runs :class:`scheduler.server.app.Controller` on its own event-loop thread, and the
    agents of the cluster.

    A problem a user can fix (state directory, port taken) does not kill the actor: it is
    kept, and :meth:`info` reports it.

    Args:
        config: The cluster config as a document (``ClusterConfig.model_dump(mode="json")``).
        joined: True on a joined Ray cluster (``greenllm up --address``).
        start_agents: Start the agents as Ray actors (False: they run as services of their
            own, ``greenllm agent --node NAME`` on each machine).
    """

    def __init__(
        self, config: dict[str, Any], joined: bool = False, start_agents: bool = True
    ) -> None:
        configure_logging()
        self._lock = threading.RLock()
        self._error: str | None = None
        self._service: BackgroundService | None = None
        self._watcher: AgentWatcher | None = None
        base = ClusterConfig.model_validate(config)
        self._name = base.name
        self._state_dir = base.state_dir
        self._nodes = NodeMap(base, joined, load_discovered(base.state_dir))
        try:
            if start_agents:
                self._nodes.update(ray_nodes(ray.nodes()))
                self._remember()
            self._plan = plan_listen(base, joined, ray.util.get_node_ip_address())
            self._tokens: Tokens | None = (
                load_or_create_tokens(base.state_dir) if base.auth.enabled else None
            )
            self._start()
        except GreenllmError as exc:
            self._error = str(exc)
            log.error("the controller cannot start: %s", exc)
            return
        write_endpoint(self._state_dir, self._plan.published, self._plan.ca_file)
        if start_agents:
            self._watcher = AgentWatcher(
                self._nodes,
                self._handoff,
                self._add_nodes,
                self._lock,
                on_dead_nodes=self._nodes_down,
            )
            self._watcher.start()
        self._ingress = IngressKeeper(
            base,
            self._plan.published,
            self._tokens.operator if self._tokens is not None else None,
            self._plan.ca_pem,
            self._inference_active,
            self._tell_ingress,
        ).start()

    def _inference_active(self) -> bool:
        assert self._service is not None
        shell = self._controller.shell
        return self._service.call(
            lambda: any(j.spec.kind == "infer" and j.phase.active for j in shell.jobs.jobs.values())
        )

    def _tell_ingress(self, url: str) -> None:
        assert self._service is not None
        shell = self._controller.shell
        self._service.call(lambda: setattr(shell, "ingress_url", url))

    def _config(self) -> ClusterConfig:
        """The config the controller runs with: discovered nodes, listen address, TLS."""
        with self._lock:
            config = self._nodes.cluster_config()
        return self._plan.apply(config)

    def _start(self) -> None:
        self._controller = Controller(self._config(), address=self._plan.listen)
        self._restart: asyncio.Event | None = None
        self._service = BackgroundService(self._serve, "greenllm-controller")

    async def _serve(self) -> None:
        """Serve until cancelled; when asked to restart, stop and serve again with the config
        as it is now, on this same event loop (gRPC's asyncio server cannot move to another
        loop). Each controller is started and stopped exactly once."""
        while True:
            self._restart = asyncio.Event()
            await self._controller.start()
            try:
                await self._restart.wait()
            finally:
                await self._controller.stop()
            self._controller = Controller(self._config(), address=self._plan.listen)

    def _remember(self) -> None:
        if self._nodes.discovered:
            save_discovered(self._state_dir, list(self._nodes.discovered.values()))

    def _handoff(self, node: str) -> Handoff:
        """What the agent of ``node`` gets (see :func:`agent_config`)."""
        config = agent_config(self._config(), node, strip_tls=self._plan.ca_pem is not None)
        return Handoff(
            config.model_dump(mode="json"), self._tokens, self._plan.ca_pem, self._plan.published
        )

    def _add_nodes(self, nodes: list[NodeConfig]) -> None:
        """Make the controller accept nodes discovered after it started."""
        with self._lock:
            self._remember()
        assert self._service is not None
        add = getattr(self._controller.shell, "add_node", None)
        if callable(add):
            self._service.call(lambda: [add(n) for n in nodes])
            return
        # A shell that cannot take nodes in: restart the controller with them (as after a
        # crash: state is on disk, the agents reconnect).
        log.info("restarting the controller to take in %s", ", ".join(n.name for n in nodes))
        restart = self._restart
        if restart is not None:
            self._service.call(restart.set)

    def _nodes_down(self, names: list[str]) -> None:
        """Tell the controller that these nodes' Ray nodes died (their machines are gone)."""
        assert self._service is not None
        shell = self._controller.shell

        def tell() -> None:
            for name in names:
                if name not in shell.nodes or shell.nodes[name].down_reason:
                    continue
                try:
                    if operator.node_down(shell, name, "its Ray node died"):
                        log.warning("node %s is down: its Ray node died", name)
                except BadInput:  # its agent still reports: not down after all
                    continue

        self._service.call(tell)

    def info(self) -> dict[str, Any]:
        """Where the controller listens, whether it runs, and its CA."""
        error = self._error
        if error is None and self._service is not None and self._service.error is not None:
            error = str(self._service.error)
        plan = getattr(self, "_plan", None)
        return {
            "pid": os.getpid(),
            "alive": error is None and self._service is not None and self._service.alive(),
            "cluster": self._name,
            "address": None if plan is None else plan.published,
            "metrics_url": None if plan is None else plan.metrics_url,
            "ca_pem": None if plan is None else plan.ca_pem,
            "error": error,
            "ingress_url": getattr(getattr(self, "_ingress", None), "url", "") or None,
        }

    def agents(self) -> dict[str, Any]:
        """Which Ray node each agent runs on, the Ray nodes without one (and why), and the
        cluster.yaml nodes no Ray node matches yet."""
        with self._lock:
            bound = dict(self._nodes.bound)
            skipped = list(self._nodes.skipped.values())
            waiting = [n for n in self._nodes.config.names() if n not in bound.values()]
            order = [n.name for n in self._nodes.nodes()]
        if self._watcher is None:  # agents run as services: cluster.yaml's nodes
            return {"bound": [], "skipped": [], "waiting": [], "external": order}
        return {
            "bound": sorted(bound.values(), key=order.index),
            "skipped": skipped if self._nodes.joined else [],
            "waiting": waiting if self._nodes.joined else [],
        }

    def stop_watching(self) -> None:
        """Start no more agents (before ``greenllm down`` stops them)."""
        if self._watcher is not None:
            self._watcher.stop()
        keeper = getattr(self, "_ingress", None)
        if keeper is not None:
            keeper.stop()

    def stop(self) -> None:
        """Stop serving (before the actor is killed)."""
        self.stop_watching()
        if self._service is not None:
            self._service.stop()
        remove_endpoint(self._state_dir)


def start_controller(
    config: ClusterConfig, joined: bool, node_id: str | None, start_agents: bool = True
) -> Any:
    """Create (or find) the detached controller actor; returns its handle.

    Args:
        config: The cluster config.
        joined: True on a joined Ray cluster.
        node_id: The Ray node to run it on (the one ``greenllm up`` runs on); None: the
            local cluster's head node.
        start_agents: Start an agent actor per Ray node (False: agents run as services).
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from scheduler.runtime.raynodes import HEAD_NODE, node_resource

    options: dict[str, Any] = {
        "name": CONTROLLER_ACTOR,
        "namespace": RAY_NAMESPACE,
        "lifetime": "detached",
        "get_if_exists": True,
    }
    if node_id is None:
        options["resources"] = {node_resource(HEAD_NODE): 0.01}
    else:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
    return ControllerActor.options(**options).remote(  # type: ignore[attr-defined]
        config.model_dump(mode="json"), joined, start_agents
    )
