"""Where the controller of a cluster listens, and the CA its TLS certificate comes from.

The controller that ``greenllm up`` starts publishes its address twice: in
``<state_dir>/controller.json`` on its own machine, and through Ray (the detached actor
``greenllm-controller`` in the Ray namespace ``greenllm`` answers ``info()``). A client
looks, in order:

1. ``<state_dir>/controller.json`` (the machine ``greenllm up`` ran on);
2. ``controller.address`` of the config, when something listens there (a controller run by
   hand with ``greenllm controller``);
3. the Ray cluster this machine belongs to (``$RAY_ADDRESS``, or the one ``ray start`` left
   in ``/tmp/ray/ray_current_cluster``), when its controller serves a cluster of the same
   ``name``: any machine of the Ray cluster finds the controller this way;
4. else ``controller.address`` (the error then names it).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenllm.config import ClusterConfig

#: Ray namespace of greenllm's actors.
RAY_NAMESPACE = "greenllm"
#: Name of the detached controller actor.
CONTROLLER_ACTOR = "greenllm-controller"
#: The controller's published endpoint, in the state directory.
ENDPOINT_FILE = "controller.json"
#: How long to try a TCP connection when checking whether something listens, seconds.
PROBE_TIMEOUT_S = 1.0
#: How long to wait for the controller actor's answer, seconds.
RAY_LOOKUP_TIMEOUT_S = 15.0
#: Ray reads this when it is imported: "0" keeps every Ray process on 127.0.0.1. Right for
#: the local cluster ``greenllm up`` starts on one machine; wrong for a cluster across
#: machines (its nodes would be unreachable).
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@dataclass(frozen=True)
class Endpoint:
    """Where a controller listens.

    Attributes:
        address: ``host:port`` of its gRPC server.
        ca_pem: The CA certificate its TLS certificate is signed by (None: the config's TLS
            settings apply, or none).
        source: Where it was found: ``state``, ``ray`` or ``config``.
    """

    address: str
    ca_pem: bytes | None = None
    source: str = "config"


def listening(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether something accepts TCP connections at ``address`` (``host:port``)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def write_endpoint(state_dir: Path, address: str, ca_file: Path | None) -> None:
    """Publish the controller's address (and CA) in ``state_dir``."""
    path = Path(state_dir) / ENDPOINT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"address": address, "ca_file": None if ca_file is None else str(ca_file)}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def remove_endpoint(state_dir: Path) -> None:
    """Take the published endpoint away (the controller is stopped)."""
    (Path(state_dir) / ENDPOINT_FILE).unlink(missing_ok=True)


def read_endpoint(state_dir: Path) -> Endpoint | None:
    """The endpoint published in ``state_dir``, or None (absent or unreadable)."""
    path = Path(state_dir) / ENDPOINT_FILE
    try:
        doc = json.loads(path.read_text())
        ca_file = doc.get("ca_file")
        ca_pem = Path(ca_file).read_bytes() if ca_file else None
        return Endpoint(str(doc["address"]), ca_pem, "state")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def ray_address_here() -> str | None:
    """The Ray cluster this machine belongs to: ``$RAY_ADDRESS``, else the address the last
    ``ray start`` recorded, when something answers there; None otherwise."""
    address = os.environ.get("RAY_ADDRESS", "")
    if not address:
        try:
            address = Path("/tmp/ray/ray_current_cluster").read_text().strip()
        except OSError:
            return None
    # Ray waits minutes for a GCS that does not answer: ask only one that does.
    target = address.removeprefix("ray://")
    return address if ":" in target and listening(target) else None


def controller_info(address: str, timeout_s: float = RAY_LOOKUP_TIMEOUT_S) -> dict[str, Any] | None:
    """The controller actor's ``info()`` through the Ray cluster at ``address`` (None: Ray
    or the actor cannot be reached)."""
    host = address.rpartition(":")[0].strip("[]")
    if host in ("127.0.0.1", "localhost", "::1"):
        # A local cluster (greenllm up): Ray would otherwise rewrite 127.0.0.1 to this
        # machine's network address, where nothing listens, and wait for it for minutes.
        for key, value in LOCAL_RAY_ENV.items():
            os.environ.setdefault(key, value)
    import ray

    started = not ray.is_initialized()
    try:
        if started:
            ray.init(
                address=address,
                namespace=RAY_NAMESPACE,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
        actor = ray.get_actor(CONTROLLER_ACTOR, namespace=RAY_NAMESPACE)
        info: Any = ray.get(actor.info.remote(), timeout=timeout_s)
        return dict(info)
    except Exception:  # Ray raises many kinds here; any of them means "not found"
        return None
    finally:
        if started and ray.is_initialized():
            ray.shutdown()


def endpoint_from_ray(config: ClusterConfig) -> Endpoint | None:
    """The endpoint the controller of ``config``'s cluster publishes through this
    machine's Ray cluster, or None."""
    address = ray_address_here()
    if address is None:
        return None
    info = controller_info(address)
    if not info or not info.get("alive") or info.get("cluster") != config.name:
        return None
    return Endpoint(str(info["address"]), info.get("ca_pem"), "ray")


def find_controller(config: ClusterConfig) -> Endpoint:
    """Where the controller of ``config``'s cluster listens (see the module's docstring)."""
    published = read_endpoint(config.state_dir)
    if published is not None:
        return published
    configured = Endpoint(config.controller.address)
    if listening(configured.address):
        return configured
    return endpoint_from_ray(config) or configured
