"""The live node agent: :class:`~workers.agent.core.AgentCore` on a gRPC stream.

The event loop connects, registers, streams telemetry and hands each controller message to
the core; every device call runs on one thread, so each GPU sees one caller at a time.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from typing import TypeVar

import grpc

from greenllm.config import ClusterConfig
from greenllm.devices.base import GPU
from greenllm.devices.discovery import get_gpus
from greenllm.errors import GreenllmError
from greenllm.proto.v1 import agent_pb2, agent_pb2_grpc
from greenllm.rpc.auth import agent_token, agent_token_from_env, bearer_metadata, check_node_token
from greenllm.rpc.channel import aio_channel
from greenllm.rpc.reconnect import Backoff, Reconnect, TelemetryBatch
from workers.agent import devices
from workers.agent.core import AgentCore, ShardRunner
from workers.agent.statefile import AgentStateFile
from workers.shardhost import ShardHost

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Telemetry batches allowed to wait for the stream; newer ones are dropped beyond that.
MAX_QUEUED_BATCHES = 50


def address_toward(target: str) -> str:
    """This machine's address on the route to ``target`` (``host:port``): where peers that
    reach ``target`` can reach this machine (127.0.0.1 when ``target`` is loopback or the
    route cannot be found)."""
    host, _, port = target.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, int(port or 9)))  # UDP: no packet is sent
            return str(s.getsockname()[0])
    except (OSError, ValueError):
        return "127.0.0.1"


class NodeAgent:
    """The agent of one node.

    Args:
        config: The cluster config (controller address, intervals, fail-safe).
        node: This node's name in ``config``.
        gpus: The node's GPUs; by default discovered with
            :func:`greenllm.devices.discovery.get_gpus`.
        token: This node's token (``node:<name>:<mac>``); by default
            ``$GREENLLM_AGENT_TOKEN``, else derived from the state directory's agent secret
            (read at every connection attempt, so the agent may start before the controller).
        address: Override of ``config.controller.address``.
        tls_root_pem: The CA certificate the controller's TLS certificate is signed by
            (handed over at start); None: the config's TLS settings apply.
        backoff: Reconnect delays.
        run_shards: Run the shards the controller starts (see :mod:`workers.shardhost`);
            when False, shard commands are acked as unimplemented.
        batch_ticks: Telemetry ticks sent per message (GPUs are still sampled every
            telemetry interval); more ticks per message cost the controller less per sample.
            None: one control period's worth, since the controller acts once per period.
        shard_runner: Runs the shards instead of a :class:`~workers.shardhost.ShardHost`.

    Raises:
        ConfigError: ``node`` is not in ``config``.
        GreenllmError: The token (given, or in ``$GREENLLM_AGENT_TOKEN``) is empty,
            malformed or another node's.
    """

    def __init__(
        self,
        config: ClusterConfig,
        node: str,
        gpus: Sequence[GPU] | None = None,
        token: str | None = None,
        address: str | None = None,
        backoff: Backoff | None = None,
        run_shards: bool = True,
        batch_ticks: int | None = None,
        shard_runner: ShardRunner | None = None,
        tls_root_pem: bytes | None = None,
    ) -> None:
        self.config = config
        self.node = config.node(node).name
        if token is not None:
            token = check_node_token(token, self.node, "the agent token")
        elif config.auth.enabled:
            token = agent_token_from_env(self.node)
        self._tls_root_pem = tls_root_pem
        gpus = list(gpus) if gpus is not None else get_gpus(config, node)
        self._token = token
        self._address = address or config.controller.address
        self._reconnect = Reconnect(backoff or Backoff())
        if batch_ticks is None:
            batch_ticks = round(config.control_period_s / config.telemetry_interval_s)
        self.batch_ticks = max(1, batch_ticks)
        self._device_thread = ThreadPoolExecutor(1, thread_name_prefix=f"agent-{self.node}")
        #: The node's shard runners (None: shards are not run here).
        self.shards: ShardRunner | None = shard_runner
        if self.shards is None and run_shards:
            self.shards = ShardHost(
                self.node,
                gpus,
                config.state_dir,
                storage_path=config.storage_path,
                serve_host=address_toward(self._address),
            )
        self.core = AgentCore(
            node=self.node,
            gpus=gpus,
            failsafe_limits_w=[devices.failsafe_limit_w(config, g, self.node) for g in gpus],
            failsafe_timeout_s=config.failsafe.timeout_s,
            state=AgentStateFile(config.state_dir / f"agent-{self.node}.json"),
            shards=self.shards,
            version=version("greenllm"),
            message_interval_s=self.batch_ticks * config.telemetry_interval_s,
        )

    @property
    def gpus(self) -> list[GPU]:
        """The node's GPUs."""
        return self.core.gpus

    @property
    def failsafe_limits_w(self) -> list[float]:
        """The fail-safe limit of each GPU, watts."""
        return self.core.failsafe_limits_w

    @property
    def failsafe_active(self) -> bool:
        """True while the GPUs are held at their fail-safe limits."""
        return self.core.failsafe_active

    @property
    def registered(self) -> bool:
        """True while registered with a controller."""
        return self.core.registered

    @property
    def commands_applied(self) -> int:
        """Commands applied (successfully or not) since start."""
        return self.core.commands_applied

    async def _on_device(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._device_thread, fn, *args)

    async def run(self) -> None:
        """Run until cancelled: boot (each GPU at most at its persisted limits), then
        connect, stream, reconnect with backoff, fail safe."""
        errors = await self._on_device(self.core.boot, time.monotonic())
        if errors:
            log.error("node %s: could not cap GPUs at start: %s", self.node, errors)
        watchdog = asyncio.create_task(self._watch_failsafe())
        try:
            while True:
                try:
                    await self._session()
                except grpc.aio.AioRpcError as exc:
                    log.warning(
                        "node %s: controller at %s: %s: %s",
                        self.node,
                        self._address,
                        exc.code().name,
                        exc.details(),
                    )
                except GreenllmError as exc:
                    log.warning("node %s: %s", self.node, exc)
                if self.registered:
                    self._reconnect.registered()
                self.core.stream_ended()
                await asyncio.sleep(self._reconnect.lost())
        finally:
            watchdog.cancel()
            self._device_thread.shutdown(wait=False)

    async def _session(self) -> None:
        token = None
        if self.config.auth.enabled:
            token = self._token or agent_token(self.config.state_dir, self.node)
        first = await self._on_device(self.core.registration)
        outbox: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue()

        async def requests() -> AsyncIterator[agent_pb2.AgentMessage]:
            yield first
            while True:
                yield await outbox.get()

        async with aio_channel(self.config, self._address, self._tls_root_pem) as channel:
            call = agent_pb2_grpc.AgentStub(channel).Connect(
                requests(), metadata=bearer_metadata(token)
            )
            telemetry: asyncio.Task[None] | None = None
            try:
                async for message in call:
                    reply = await self._on_device(self.core.on_message, message, time.monotonic())
                    if reply is not None:
                        outbox.put_nowait(reply)
                    if message.WhichOneof("body") == "registered" and telemetry is None:
                        telemetry = asyncio.create_task(self._stream_telemetry(outbox))
            finally:
                if telemetry is not None:
                    telemetry.cancel()
                call.cancel()
        log.warning("node %s: the controller closed the stream", self.node)

    async def _stream_telemetry(self, outbox: asyncio.Queue[agent_pb2.AgentMessage]) -> None:
        interval_s = self.config.telemetry_interval_s
        next_s = time.monotonic()
        batch = TelemetryBatch(self.batch_ticks)
        while True:
            full = None
            try:
                full = batch.add(await self._on_device(devices.sample, self.gpus))
            except Exception:  # a device error must not end the telemetry stream
                log.exception("node %s: sampling failed", self.node)
            if full is not None and outbox.qsize() < MAX_QUEUED_BATCHES:
                message = await self._on_device(self.core.telemetry, full, time.time())
                outbox.put_nowait(message)
            next_s = max(next_s + interval_s, time.monotonic())
            await asyncio.sleep(next_s - time.monotonic())

    async def _watch_failsafe(self) -> None:
        timeout_s = self.config.failsafe.timeout_s
        while True:
            await asyncio.sleep(min(0.5, timeout_s / 10))
            done = await self._on_device(self.core.check_failsafe, time.monotonic())
            if done is not None:
                log.warning("%s", done)
