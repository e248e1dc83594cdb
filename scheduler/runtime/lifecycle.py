"""Bring a greenllm cluster up on Ray, and take it down again.

``up`` starts the local cluster (one Ray node per node of cluster.yaml on this machine) or
joins a running Ray cluster (``ray start --head`` / ``ray start --address`` on each machine,
then ``greenllm up --address HEAD:6379``), starts the controller actor on this machine, and
returns once the agent of every Ray node (started by the controller actor, see
:mod:`scheduler.runtime.agents`) has registered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenllm.config import ClusterConfig
from greenllm.errors import GreenllmError
from greenllm.rpc.auth import load_or_create_tokens
from greenllm.rpc.client import ClusterClient, ControllerError
from greenllm.rpc.locate import CONTROLLER_ACTOR, RAY_NAMESPACE, remove_endpoint
from scheduler.runtime.agents import AGENT_ACTOR_PREFIX, agent_actor_class, runtime_part
from scheduler.runtime.nodemap import DISCOVERED_FILE
from scheduler.runtime.raynodes import (
    RuntimeRecord,
    pid_alive,
    spawn_host,
    stop_host,
    use_local_ray_env,
)

__all__ = ["AGENT_ACTOR_PREFIX", "UpResult", "agent_actor_class", "down", "up"]

#: Seconds an actor gets to stop cleanly (agents restore their GPUs' settings).
STOP_TIMEOUT_S = 45.0


@dataclass(frozen=True)
class UpResult:
    """Where the pieces of a running cluster are.

    Attributes:
        ray_address: Ray GCS address.
        controller_address: The controller's gRPC address.
        metrics_url: Prometheus endpoint (None when disabled).
        started_ray: True when ``up`` started the Ray nodes itself.
        startup_s: Seconds until every agent had registered.
        nodes: The nodes whose agents registered, cluster.yaml's first.
        notes: What the operator should know (Ray nodes without an agent, cluster.yaml
            nodes no Ray node matches).
    """

    ray_address: str
    controller_address: str
    metrics_url: str | None
    started_ray: bool
    startup_s: float
    nodes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _ray_init(address: str, local: bool) -> None:
    if local:
        use_local_ray_env()
    import ray

    if not ray.is_initialized():
        ray.init(
            address=address,
            namespace=RAY_NAMESPACE,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )


def up(
    config_path: Path,
    config: ClusterConfig,
    address: str | None = None,
    log: Callable[[str], None] = lambda _m: None,
    timeout_s: float = 120.0,
    start_agents: bool = True,
) -> UpResult:
    """Start (or join) Ray, the controller actor and one agent actor per node.

    Returns once every agent has registered (with ``start_agents`` False, once the
    controller serves: the agents run as services, ``greenllm agent --node NAME``).

    Raises:
        GreenllmError: Already up, or something did not start in time.
    """
    if not address:
        use_local_ray_env()  # before Ray is imported
    import ray

    from scheduler.runtime.controller_actor import start_controller

    start = time.monotonic()
    existing = RuntimeRecord.load(config.state_dir)
    if existing is not None and (existing.host_pid == 0 or pid_alive(existing.host_pid)):
        raise GreenllmError(
            f"a cluster is already up for {config.state_dir} (Ray at {existing.address}); "
            "run 'greenllm down' first"
        )
    if config.auth.enabled:
        load_or_create_tokens(config.state_dir)  # a bad tokens file: one line, before Ray
    joined = bool(address)
    if address:
        record = RuntimeRecord(address=address)
        log(f"joining the Ray cluster at {address}")
    else:
        record = spawn_host(config_path, config, log=log, timeout_s=timeout_s)
    try:
        _ray_init(record.address, local=not joined)
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        raise GreenllmError(f"cannot join the Ray cluster at {record.address}: {exc}") from None
    record.save(config.state_dir)
    log("starting the controller actor")
    node_id = ray.get_runtime_context().get_node_id() if joined else None
    controller = start_controller(config, joined, node_id, start_agents)
    info = ray.get(controller.info.remote(), timeout=timeout_s)
    if not info["alive"]:
        raise GreenllmError(f"the controller did not start: {info['error']}")
    record.controller_address = info["address"]
    record.save(config.state_dir)
    log(f"controller listening on {info['address']}")
    if start_agents:
        nodes, notes = _wait_registered(controller, config, start + timeout_s, log)
    else:
        nodes, notes = (
            [],
            [
                f"start the agents yourself: greenllm agent --node NAME on each machine "
                f"(nodes: {', '.join(config.names())}; tokens: greenllm token issue --node NAME)"
            ],
        )
    return UpResult(
        ray_address=record.address,
        controller_address=info["address"],
        metrics_url=info["metrics_url"],
        started_ray=record.host_pid != 0,
        startup_s=time.monotonic() - start,
        nodes=nodes,
        notes=notes,
    )


def _registered(config: ClusterConfig) -> set[str] | None:
    try:
        with ClusterClient(config, timeout_s=2.0) as client:
            status = client.get_status()
    except ControllerError:
        return None
    return {n.name for n in status.nodes if n.connected and not n.stale}


def _wait_registered(
    controller: Any, config: ClusterConfig, deadline: float, log: Callable[[str], None]
) -> tuple[list[str], list[str]]:
    """Wait until the agent of every Ray node has registered; returns those nodes and the
    notes for the operator."""
    import ray

    told: set[str] = set()
    last: tuple[int, int] = (-1, -1)
    wanted: list[str] = []
    while time.monotonic() < deadline:
        agents = ray.get(controller.agents.remote(), timeout=30)
        wanted = agents["bound"]
        notes = [*agents["skipped"]] + [
            f"cluster.yaml node {n} matches no Ray node yet (its agent starts when one joins)"
            for n in agents["waiting"]
        ]
        for note in notes:
            if note not in told:
                log(note)
                told.add(note)
        connected = _registered(config) or set()
        count = (len(connected & set(wanted)), len(wanted))
        if count != last:
            log(f"agents registered: {count[0]}/{count[1]}")
            last = count
        if wanted and set(wanted) <= connected:
            return wanted, sorted(told)
        time.sleep(0.5)
    missing = [n for n in wanted if n not in (_registered(config) or set())]
    reasons = [f"{n} ({_agent_error(n) or 'not registered'})" for n in missing or wanted]
    raise GreenllmError(f"agents did not register in time: {', '.join(reasons) or 'none started'}")


def _agent_error(node: str) -> str | None:
    import ray

    try:
        actor = ray.get_actor(AGENT_ACTOR_PREFIX + node, namespace=RAY_NAMESPACE)
        info: Any = ray.get(actor.info.remote(), timeout=5)
    except Exception:  # gone, or not answering: no reason to give
        return None
    error = info.get("error")
    return None if error is None else str(error)


def down(config: ClusterConfig, log: Callable[[str], None] = lambda _m: None) -> bool:
    """Stop the agents (restoring GPU defaults), the controller, and the Ray nodes ``up``
    started. Returns False when nothing was up."""
    record = RuntimeRecord.load(config.state_dir)
    if record is None:
        return False
    if record.host_pid == 0 or pid_alive(record.host_pid):
        try:
            _stop_actors(record.address, local=record.host_pid != 0, log=log)
        except (ConnectionError, TimeoutError, RuntimeError, GreenllmError) as exc:
            log(f"could not reach the actors ({exc}); stopping the nodes anyway")
    if record.host_pid:
        log("stopping the Ray nodes")
        stop_host(record)
    remove_endpoint(config.state_dir)
    (config.state_dir / DISCOVERED_FILE).unlink(missing_ok=True)
    (config.state_dir / "runtime.json").unlink(missing_ok=True)
    return True


def _stop(name: str, log: Callable[[str], None]) -> None:
    import ray

    try:
        actor = ray.get_actor(name, namespace=RAY_NAMESPACE)
    except ValueError:
        return
    log(f"stopping {name}")
    try:
        ray.get(actor.stop.remote(), timeout=STOP_TIMEOUT_S)
    except Exception as exc:  # it is killed below whatever went wrong
        log(f"{name} did not stop cleanly: {exc}")
    ray.kill(actor, no_restart=True)


def _stop_actors(address: str, local: bool, log: Callable[[str], None]) -> None:
    _ray_init(address, local)  # first: it sets the local cluster's environment for Ray
    import ray

    try:
        controller = ray.get_actor(CONTROLLER_ACTOR, namespace=RAY_NAMESPACE)
        ray.get(controller.stop_watching.remote(), timeout=STOP_TIMEOUT_S)
    except ValueError:
        pass
    except Exception as exc:  # a dead controller must not keep the agents running
        log(f"{CONTROLLER_ACTOR} did not answer: {exc}")
    runtime_part("ingress-delete")()  # its replica asks the controller: it goes first
    agents = [n for n in ray.util.list_named_actors() if n.startswith(AGENT_ACTOR_PREFIX)]
    for name in sorted(agents):
        _stop(name, log)
    _stop(CONTROLLER_ACTOR, log)
    ray.shutdown()
