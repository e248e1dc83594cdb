"""Start and stop the Ray nodes of a local greenllm cluster.

On one machine each simulated node of cluster.yaml becomes its own Ray node (its own
raylet, with its GPU-type resources) so that losing a node is a real Ray node failure.
One detached *host* process (``python -m scheduler.runtime.raynodes CONFIG``) holds a
``ray.cluster_utils.Cluster``: a head plus one node per configured node. It writes what
it started to ``<state_dir>/runtime.json`` (GCS address, its pid, each node's raylet
pid) and shuts the whole cluster down on SIGTERM; ``greenllm down`` signals exactly that
process, never another user's Ray.

Settings that make this reliable on 2 cores (shared/ENVIRONMENT.md): one CPU and 100 MB
of object store per node, no dashboard, every process on 127.0.0.1 (only for this local
cluster: :func:`use_local_ray_env`; a joined cluster keeps Ray's own settings), and fast
health checks on the head (node loss noticed in about 3 s instead of 15 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


from greenllm.config import ClusterConfig, load_cluster_config
from greenllm.errors import GreenllmError
from greenllm.rpc.locate import LOCAL_RAY_ENV, RAY_NAMESPACE

HEAD_NODE = "greenllm-head"
NAMESPACE = RAY_NAMESPACE


def use_local_ray_env() -> None:
    """Set :data:`LOCAL_RAY_ENV` in this process (unless already set), before Ray is
    imported, to start or join the local cluster."""
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)


OBJECT_STORE_BYTES = 100 * 1024 * 1024
HEAD_SYSTEM_CONFIG = {
    "health_check_period_ms": 1000,
    "health_check_failure_threshold": 3,
    "health_check_timeout_ms": 1000,
    "health_check_initial_delay_ms": 1000,
}


def node_resource(node: str) -> str:
    """The custom resource that pins actors to greenllm node ``node``."""
    return f"greenllm-node:{node}"


def gpu_resource(gpu_type: str) -> str:
    """The custom resource counting GPUs of ``gpu_type`` on a node."""
    return f"greenllm-gpu:{gpu_type}"


def node_resources(config: ClusterConfig, node: str) -> dict[str, float]:
    """Custom resources of Ray node ``node``: its pin, and one unit per GPU of each type."""
    resources: dict[str, float] = {node_resource(node): 1.0}
    for gpu_type in config.node(node).gpu_types():
        key = gpu_resource(gpu_type)
        resources[key] = resources.get(key, 0.0) + 1.0
    return resources


@dataclass
class RuntimeRecord:
    """What ``greenllm up`` started, saved in ``<state_dir>/runtime.json``.

    Attributes:
        address: Ray GCS address (``host:port``).
        host_pid: The host process holding the cluster (0: greenllm joined a cluster).
        controller_address: Where the controller listens (published through Ray too).
        raylet_pids: Raylet pid of each greenllm node.
        log_file: The host's log.
    """

    address: str
    host_pid: int = 0
    controller_address: str = ""
    raylet_pids: dict[str, int] = field(default_factory=dict)
    log_file: str = ""

    def save(self, state_dir: Path) -> None:
        """Write the record atomically."""
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = state_dir / "runtime.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(state_dir / "runtime.json")

    @classmethod
    def load(cls, state_dir: Path) -> RuntimeRecord | None:
        """Read the record, or None when nothing is recorded."""
        path = state_dir / "runtime.json"
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` runs (a zombie child of ours is reaped and counts as gone)."""
    if pid <= 0:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def spawn_host(
    config_path: Path,
    config: ClusterConfig,
    log: Callable[[str], None] = lambda _msg: None,
    timeout_s: float = 120.0,
) -> RuntimeRecord:
    """Start the host process and wait until every node has joined.

    Raises:
        GreenllmError: The host died or the nodes did not join in time (its log is named).
    """
    state_dir = config.state_dir
    (state_dir / "runtime.json").unlink(missing_ok=True)
    log_dir = state_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / "ray-host.log"
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler.runtime.raynodes", str(config_path.resolve())],
            env={**LOCAL_RAY_ENV, **os.environ},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    log(f"starting a Ray head and {len(config.nodes)} nodes (log: {log_file})")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = RuntimeRecord.load(state_dir)
        if record is not None and record.host_pid == proc.pid:
            return record
        if proc.poll() is not None:
            raise GreenllmError(
                f"the Ray host exited with status {proc.returncode}; see {log_file}"
            )
        time.sleep(0.2)
    stop_host(RuntimeRecord(address="", host_pid=proc.pid))
    raise GreenllmError(f"the Ray nodes did not come up within {timeout_s:g} s; see {log_file}")


def stop_host(record: RuntimeRecord, grace_s: float = 30.0) -> None:
    """SIGTERM the host (it shuts its cluster down); SIGKILL its group after ``grace_s``."""
    if not pid_alive(record.host_pid):
        return
    os.kill(record.host_pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not pid_alive(record.host_pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(record.host_pid, signal.SIGKILL)


def _host_main(config_path: str) -> int:
    """The host process: build the cluster, record it, wait for SIGTERM, shut down."""
    use_local_ray_env()
    from ray.cluster_utils import Cluster

    config = load_cluster_config(config_path)
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    common: dict[str, Any] = {"num_cpus": 1, "object_store_memory": OBJECT_STORE_BYTES}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **common,
            "resources": {node_resource(HEAD_NODE): 1.0},
            "include_dashboard": False,
            "_system_config": HEAD_SYSTEM_CONFIG,
        },
    )
    try:
        nodes = {node: _add_node(cluster, config, node, common) for node in config.names()}
        cluster.wait_for_nodes()
        record = RuntimeRecord(
            address=cluster.address,
            host_pid=os.getpid(),
            raylet_pids={n: _raylet_pid(node) for n, node in nodes.items()},
            log_file=str(config.state_dir / "logs" / "ray-host.log"),
        )
        record.save(config.state_dir)
        print(f"cluster ready at {cluster.address}", flush=True)
        while not stop:
            time.sleep(0.2)
    finally:
        print("shutting the cluster down", flush=True)
        cluster.shutdown()
        (config.state_dir / "runtime.json").unlink(missing_ok=True)
        # Whatever is left in our process group (a raylet whose start timed out, a stray
        # worker) goes with us: nothing outlives the host.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(os.getpgid(0), signal.SIGTERM)
    return 0


NODE_START_ATTEMPTS = 3


def _add_node(cluster: Any, config: ClusterConfig, node: str, common: dict[str, Any]) -> Any:
    """Add one Ray node; Ray gives a raylet 30 s to register, which a loaded machine can
    miss, so try again a few times."""
    for attempt in range(1, NODE_START_ATTEMPTS + 1):
        try:
            added = cluster.add_node(**common, resources=node_resources(config, node))
        except Exception as exc:
            if attempt == NODE_START_ATTEMPTS:
                raise
            print(f"node {node} did not start ({exc}); retrying", flush=True)
            continue
        print(f"node {node} joined", flush=True)
        return added
    raise AssertionError("unreachable")


def _raylet_pid(node: object) -> int:
    procs = getattr(node, "all_processes", {}).get("raylet", [])
    return int(procs[0].process.pid) if procs else 0


if __name__ == "__main__":
    sys.exit(_host_main(sys.argv[1]))
