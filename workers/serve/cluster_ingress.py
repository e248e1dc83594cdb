"""The ingress as the cluster runs it: a Ray Serve deployment (HTTP on Serve's proxy), or
the same app under uvicorn without Ray (tests, a controller run by hand).

    url = deploy_ingress(config, "127.0.0.1:50051", token, None, "127.0.0.1", 8000)
    # job J: f"{url}/jobs/J/v1" (what `greenllm jobs` shows as its endpoint)

It asks the controller (``GetJob``, ``GetStatus``) where each job's replicas serve and
sends each job's own load (:mod:`workers.serve.jobload`). ``ray`` is imported only by
:func:`deploy_ingress`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import grpc
from fastapi import FastAPI

from greenllm.config import ClusterConfig
from greenllm.proto.v1 import cluster_pb2
from greenllm.rpc.client import ClusterClient, ControllerError
from workers.serve.ingress import ReplicaDirectory, create_ingress_app
from workers.serve.jobload import JobLoads

log = logging.getLogger(__name__)

#: Serve application and deployment name.
APP_NAME = "greenllm-ingress"
#: Requests the ingress replica handles at once (each replica's queue refuses beyond its
#: own limit with 429, which the ingress passes on).
MAX_ONGOING_REQUESTS = 4096


class ClusterIngress:
    """The ingress's state: a client of the controller, the replica directory, the loads.

    Args:
        config: The cluster config as a document (``model_dump(mode="json")``).
        controller_address: Where the controller listens (``host:port``).
        token: Operator token (None: the config's state directory's, or none without auth).
        base_url: The ingress's own base URL (``http://host:port``), where job loads go.
        send_loads: Send each job's own load (False: only users' requests).
        ca_pem: CA certificate of the controller's TLS (None: the config's TLS settings).
    """

    def __init__(
        self,
        config: dict[str, Any],
        controller_address: str,
        token: str | None,
        base_url: str,
        send_loads: bool = True,
        ca_pem: bytes | None = None,
    ) -> None:
        cfg = ClusterConfig.model_validate(config)
        self.max_body_bytes = cfg.serve.max_body_bytes
        self._client = ClusterClient(
            cfg, token=token, timeout_s=5.0, address=controller_address, root_pem=ca_pem
        )
        self._lock = threading.Lock()
        self.directory = ReplicaDirectory(self.get_job)
        self.loads = JobLoads(self.list_jobs, self.get_job, base_url)
        self._loop: asyncio.AbstractEventLoop | None = None
        if send_loads:
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._run_loads, name="job-loads", daemon=True).start()

    def _run_loads(self) -> None:
        assert self._loop is not None
        self._loop.run_until_complete(self.loads.run())

    def get_job(self, job_id: str) -> cluster_pb2.Job | None:
        """The job (with its spec), None when the controller knows no such job."""
        try:
            with self._lock:
                return self._client.get_job(job_id)
        except ControllerError as exc:
            if exc.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise

    def list_jobs(self) -> list[cluster_pb2.Job]:
        """The active and recently ended jobs."""
        with self._lock:
            return list(self._client.get_status().jobs)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_ingress_app(self.directory, self.max_body_bytes)

    def close(self) -> None:
        """Stop sending loads and close the controller client."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._client.close()


def deploy_ingress(
    config: ClusterConfig,
    controller_address: str,
    token: str | None,
    ca_pem: bytes | None,
    host: str,
    port: int,
) -> str:
    """Run the ingress on Ray Serve, its HTTP proxy at ``host:port`` on the Ray head node
    and its replica on this node (where the controller runs). Blocks until it serves;
    returns its base URL as users reach it (a wildcard ``host`` names the head's address).

    Args:
        config: The cluster config.
        controller_address: Where the controller listens.
        token: Operator token (None: auth is off).
        ca_pem: CA certificate of the controller's TLS (None: plaintext or the config's).
        host: Address Serve's proxy listens on.
        port: Its port.

    Raises:
        RuntimeError: Serve could not start it (e.g. the port is taken).
    """
    import ray
    from ray import serve

    here = ray.get_runtime_context().get_node_id()
    pin = _pin_resource(ray.nodes(), here)
    shown = host
    if host in ("0.0.0.0", "::"):
        head = [n for n in ray.nodes() if "node:__internal_head__" in n.get("Resources", {})]
        shown = head[0]["NodeManagerAddress"] if head else ray.util.get_node_ip_address()
    public_url = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
    serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")
    deployment = serve.deployment(
        name=APP_NAME,
        num_replicas=1,
        # An async proxy: Serve's default (5 requests at a time) would queue the rest.
        max_ongoing_requests=MAX_ONGOING_REQUESTS,
        ray_actor_options={"num_cpus": 0, "resources": {pin: 0.001}},
    )(serve.ingress()(ClusterIngress))
    app = deployment.bind(
        config.model_dump(mode="json"), controller_address, token, public_url, True, ca_pem
    )
    serve.run(app, name=APP_NAME, route_prefix="/")
    return public_url


def _pin_resource(nodes: list[dict[str, Any]], node_id: str) -> str:
    """A resource only Ray node ``node_id`` has (Serve takes resources, not node affinity):
    its greenllm node pin on a local cluster, else ``node:<its address>``."""
    me = next(n for n in nodes if n["NodeID"] == node_id)
    pins = [r for r in me["Resources"] if r.startswith("greenllm-node:")]
    return pins[0] if pins else f"node:{me['NodeManagerAddress']}"


def delete_ingress() -> None:
    """Take the ingress off Ray Serve (nothing when it is not there)."""
    from ray import serve

    try:
        serve.delete(APP_NAME)
    except Exception as exc:  # Serve not running: nothing to delete
        log.debug("no ingress to delete: %s", exc)
