"""Bring a greenllm cluster up on Ray, and take it down again."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from greenllm.config import ClusterConfig
from greenllm.errors import GreenllmError
from greenllm.rpc.client import ControllerError, connect
from scheduler.runtime.raynodes import (
    NAMESPACE,
    RuntimeRecord,
    node_resource,
    pid_alive,
    spawn_host,
    stop_host,
)

RUNTIME_ENTRY_POINT_GROUP = "greenllm.runtime"
AGENT_ACTOR_PREFIX = "greenllm-agent-"


@dataclass(frozen=True)
class UpResult:
    """Where the pieces of a running cluster are.

    Attributes:
        ray_address: Ray GCS address.
        controller_address: The controller's gRPC address.
        metrics_url: Prometheus endpoint (None when disabled).
        started_ray: True when ``up`` started the Ray nodes itself.
        startup_s: Seconds until every agent had registered.
    """

    ray_address: str
    controller_address: str
    metrics_url: str | None
    started_ray: bool
    startup_s: float


def _ray_init(address: str) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(
            address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.ERROR
        )


def agent_actor_class() -> Any:
    """The agent actor class, from the ``greenllm.runtime`` entry point ``agent``."""
    for ep in entry_points(group=RUNTIME_ENTRY_POINT_GROUP):
        if ep.name == "agent":
            return ep.load()
    raise GreenllmError("no agent runtime is installed (entry point greenllm.runtime:agent)")


def up(
    config_path: Path,
    config: ClusterConfig,
    address: str | None = None,
    log: Callable[[str], None] = lambda _m: None,
    timeout_s: float = 120.0,
) -> UpResult:
    """Start (or join) Ray, the controller actor and one agent actor per node.

    Returns once every agent has registered with the controller.

    Raises:
        GreenllmError: Already up, or something did not start in time.
    """
    import ray

    from scheduler.runtime.controller_actor import start_controller

    start = time.monotonic()
    existing = RuntimeRecord.load(config.state_dir)
    if existing is not None and (existing.host_pid == 0 or pid_alive(existing.host_pid)):
        raise GreenllmError(
            f"a cluster is already up for {config.state_dir} (Ray at {existing.address}); "
            "run 'greenllm down' first"
        )
    if address:
        record = RuntimeRecord(address=address)
        record.save(config.state_dir)
        log(f"joining the Ray cluster at {address}")
    else:
        record = spawn_host(config_path, config, log=log, timeout_s=timeout_s)
    _ray_init(record.address)
    config_file = str(config_path.resolve())
    log("starting the controller actor")
    controller = start_controller(config_file)
    info = ray.get(controller.info.remote(), timeout=timeout_s)
    if not info["alive"]:
        raise GreenllmError(f"the controller did not start: {info['error']}")
    agent_cls = agent_actor_class()
    for node in config.names():
        log(f"starting the agent of {node}")
        agent_cls.options(
            name=AGENT_ACTOR_PREFIX + node,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            resources={node_resource(node): 0.01},
        ).remote(config_file, node)
    _wait_registered(config_path, config, start + timeout_s, log)
    port = config.controller.metrics_port
    host = config.controller.address.rpartition(":")[0]
    return UpResult(
        ray_address=record.address,
        controller_address=config.controller.address,
        metrics_url=f"http://{host}:{port}/metrics" if port else None,
        started_ray=record.host_pid != 0,
        startup_s=time.monotonic() - start,
    )


def _wait_registered(
    config_path: Path, config: ClusterConfig, deadline: float, log: Callable[[str], None]
) -> None:
    wanted = set(config.names())
    last: set[str] = set()
    while time.monotonic() < deadline:
        try:
            with connect(config_path, timeout_s=2.0) as client:
                status = client.get_status()
            connected = {n.name for n in status.nodes if n.connected and not n.stale}
            if connected != last:
                log(f"agents registered: {len(connected)}/{len(wanted)}")
                last = connected
            if wanted <= connected:
                return
        except ControllerError:
            pass
        time.sleep(0.5)
    missing = ", ".join(sorted(wanted - last))
    raise GreenllmError(f"agents did not register in time: {missing}")


def down(config: ClusterConfig, log: Callable[[str], None] = lambda _m: None) -> bool:
    """Stop the agents (restoring GPU defaults), the controller, and the Ray nodes ``up``
    started. Returns False when nothing was up."""
    record = RuntimeRecord.load(config.state_dir)
    if record is None:
        return False
    if record.host_pid == 0 or pid_alive(record.host_pid):
        try:
            _stop_actors(record.address, config, log)
        except (ConnectionError, TimeoutError, GreenllmError) as exc:
            log(f"could not reach the actors ({exc}); stopping the nodes anyway")
    if record.host_pid:
        log("stopping the Ray nodes")
        stop_host(record)
    (config.state_dir / "runtime.json").unlink(missing_ok=True)
    return True


def _stop_actors(address: str, config: ClusterConfig, log: Callable[[str], None]) -> None:
    import ray

    from scheduler.runtime.controller_actor import CONTROLLER_ACTOR

    _ray_init(address)
    names = [AGENT_ACTOR_PREFIX + n for n in config.names()] + [CONTROLLER_ACTOR]
    for name in names:
        try:
            actor = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            continue
        log(f"stopping {name}")
        try:
            ray.get(actor.stop.remote(), timeout=45)
        except Exception as exc:
            log(f"{name} did not stop cleanly: {exc}")
        ray.kill(actor, no_restart=True)
    ray.shutdown()
