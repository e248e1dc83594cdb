"""The controller process: the controller shell behind a gRPC server (Agent, Cluster, health,
reflection), its control loop on the event loop, SQLite, auth and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from greenllm.config import ClusterConfig
from greenllm.errors import GreenllmError
from greenllm.proto.v1 import agent_pb2, agent_pb2_grpc, cluster_pb2, cluster_pb2_grpc
from greenllm.rpc.auth import load_or_create_tokens
from greenllm.rpc.channel import GRPC_OPTIONS, server_credentials
from scheduler.server.agent_service import AgentServicer
from scheduler.server.auth import AuthInterceptor
from scheduler.server.cluster_service import ClusterServicer
from scheduler.server.logstore import LogStore
from scheduler.server.metrics import serve_metrics
from scheduler.server.sqlstore import SqliteStore
from scheduler.shell.controller import ControllerShell
from scheduler.shell.ports import StoreError

log = logging.getLogger(__name__)


async def run_control_loop(shell: ControllerShell) -> None:
    """Step ``shell`` every control period, and early when it asks (at most once per
    period), until cancelled. A failing step is logged; the next one runs as usual."""
    woken = asyncio.Event()
    shell.on_wake = woken.set
    while True:
        if shell.due(shell.clock()):
            try:
                shell.step()
            except Exception:  # one bad step must not stop the controller
                log.exception("control step failed")
        woken.clear()
        await asyncio.sleep(0)  # what arrived during the step is taken in first
        wait_s = shell.wait_s(shell.clock())
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), wait_s)


class Controller:
    """One controller.

    Args:
        config: The cluster config.
        address: Override of ``config.controller.address`` (port 0 picks a free one).
        metrics_port: Override of ``config.controller.metrics_port`` (0 disables metrics).
    """

    def __init__(
        self, config: ClusterConfig, address: str | None = None, metrics_port: int | None = None
    ) -> None:
        self.config = config
        self.address = address or config.controller.address
        self.metrics_port = config.controller.metrics_port if metrics_port is None else metrics_port
        try:
            self.store = SqliteStore(config.state_dir / "controller.db")
            self.shell = ControllerShell(config, self.store)
        except StoreError as exc:
            raise GreenllmError(f"controller state: {exc.message}") from None
        self.logs = LogStore(config.state_dir / "logs")
        self.shell.on_logs = self.logs.append
        self.cluster = ClusterServicer(self.shell, self.logs)
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._metrics: WSGIServer | None = None

    async def start(self) -> None:
        """Listen, start the control loop and the metrics endpoint.

        Raises:
            GreenllmError: The address or the metrics port cannot be bound.
        """
        interceptors = []
        if self.config.auth.enabled:
            interceptors.append(AuthInterceptor(load_or_create_tokens(self.config.state_dir)))
        server = grpc.aio.server(interceptors=interceptors, options=GRPC_OPTIONS)
        verify = interceptors[0].verify if interceptors else None
        agent_pb2_grpc.add_AgentServicer_to_server(AgentServicer(self.shell, verify), server)
        cluster_pb2_grpc.add_ClusterServicer_to_server(self.cluster, server)
        health_servicer = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = [
            agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name,
            cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name,
        ]
        for name in ["", *names]:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        try:
            if self.config.auth.tls is not None:
                creds = server_credentials(self.config.auth.tls)
                self.port = server.add_secure_port(self.address, creds)
            else:
                self.port = server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise GreenllmError(f"controller cannot listen on {self.address}: {exc}") from None
        await server.start()
        self._server = server
        self._loop_task = asyncio.create_task(run_control_loop(self.shell))
        if self.metrics_port:
            host = self.config.controller.metrics_address or self.address.rpartition(":")[0]
            host = host.strip("[]")
            try:
                self._metrics = serve_metrics(
                    self.cluster.status,
                    asyncio.get_running_loop(),
                    host,
                    self.metrics_port,
                    self.config.carbon,
                )
            except OSError as exc:
                await self.stop()
                raise GreenllmError(
                    f"controller cannot serve metrics on {host}:{self.metrics_port}: {exc.strerror}"
                ) from None
        log.info(
            "controller listening on %s (port %d), %d nodes, budget %g W, policy %s%s",
            self.address,
            self.port,
            len(self.config.nodes),
            self.shell.budget_w,
            self.shell.policy_name,
            f", metrics on :{self.metrics_port}" if self._metrics else "",
        )

    async def serve(self) -> None:
        """Start and run until cancelled, then stop."""
        await self.start()
        try:
            assert self._server is not None
            await self._server.wait_for_termination()
        finally:
            await self.stop()

    async def stop(self, grace_s: float = 1.0) -> None:
        """Stop the control loop, the metrics endpoint and the server."""
        if self._loop_task is not None:
            self._loop_task.cancel()
        if self._metrics is not None:
            self._metrics.shutdown()
            self._metrics.server_close()
            self._metrics = None
        if self._server is not None:
            await self._server.stop(grace_s)
        self.shell.persist.step(self.shell.clock())
        self.store.close()
