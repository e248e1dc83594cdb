"""Run the API under uvicorn without Ray: on a thread (tests, benchmarks, the agent), or in
the foreground. It listens on 127.0.0.1 unless told otherwise.

    replicas = create_replicas("tiny", [SimulatedGPU("H100-SXM"), SimulatedGPU("L4")])
    server = ApiServer(ReplicaPool(replicas)).start()   # server.base_url -> .../v1
    ...
    server.stop()                                        # stops the replicas too
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Sequence

import uvicorn
from fastapi import FastAPI

from greenllm.devices import physics
from greenllm.devices.base import GPU
from workers.serve.engine import ReplicaEngine
from workers.serve.openai_app import create_app
from workers.serve.pool import ReplicaPool


def create_replicas(
    model: str,
    gpus: Sequence[GPU],
    max_batch: int = 8,
    max_queue: int = 64,
    prefix: str = "replica",
    workload: physics.Workload | None = None,
    model_id: str | None = None,
) -> list[ReplicaEngine]:
    """One started replica of ``model`` per GPU, named ``<prefix>-<i>``.

    Args:
        model: ``tiny``, ``small``, ``smollm2-135m``, or a model / compressed-artifact
            directory.
        gpus: The GPUs (simulated: paced CPU replicas; NVML: CUDA replicas).
        max_batch: Most requests each decodes together.
        max_queue: Most requests waiting at each.
        prefix: Name prefix.
        workload: What simulated GPUs run while busy (default: decode at ``max_batch``).
        model_id: Name served in the API (default: ``model``).
    """
    return [
        ReplicaEngine.load(
            model,
            gpu,
            name=f"{prefix}-{i}",
            model_id=model_id or model,
            max_batch=max_batch,
            max_queue=max_queue,
            workload=workload,
        ).start()
        for i, gpu in enumerate(gpus)
    ]


class ApiServer:
    """The API app for ``pool`` (or any ASGI ``app``) under uvicorn on a daemon thread.

    Args:
        pool: The replicas to serve (None: ``app`` serves).
        host: Address to listen on.
        port: Port (0: a free one).
        app: The app to serve instead of ``pool``'s API (e.g. the cluster's ingress).
    """

    def __init__(
        self,
        pool: ReplicaPool | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        app: FastAPI | None = None,
    ) -> None:
        if (pool is None) == (app is None):
            raise ValueError("give a pool or an app")
        self.pool = pool
        self.app = app if app is not None else create_app(pool)  # type: ignore[arg-type]
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so
        # (proto 0 leaves Nagle on: every answer then waits ~40 ms for a delayed ACK).
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = host, int(self._sock.getsockname()[1])
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="api-server", daemon=True)

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``: what OpenAI clients take as ``base_url``."""
        return f"{self.root_url}/v1"

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT``."""
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self, timeout_s: float = 10.0) -> ApiServer:
        """Start serving; returns once it accepts connections.

        Raises:
            TimeoutError: It did not start within ``timeout_s``.
        """
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not self._server.started:
            if waited > timeout_s or not self._thread.is_alive():
                raise TimeoutError(f"the API server did not start within {timeout_s} s")
            deadline.wait(0.01)
            waited += 0.01
        return self

    def stop(self, stop_replicas: bool = True, timeout_s: float = 10.0) -> None:
        """Stop the replicas (their requests fail, streams end), then the server."""
        if stop_replicas and self.pool is not None:
            self.pool.stop_all("endpoint stopped")
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._sock.close()
