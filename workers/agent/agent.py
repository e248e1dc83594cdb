"""The node agent's event loop: connect, register, stream telemetry, obey, fail safe."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from typing import TypeVar

import grpc

from greenllm.config import ClusterConfig
from greenllm.devices.base import GPU
from greenllm.devices.discovery import get_gpus
from greenllm.errors import GreenllmError
from greenllm.proto.v1 import agent_pb2, agent_pb2_grpc
from greenllm.rpc.auth import agent_token, bearer_metadata
from greenllm.rpc.channel import aio_channel
from workers.agent import devices
from workers.agent.shards import SHARD_ACTIONS, apply_shard_command, shard_samples
from workers.shardhost import ShardHost

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Telemetry batches allowed to wait for the stream; newer ones are dropped beyond that.
MAX_QUEUED_BATCHES = 50


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``initial_s`` doubling up to ``max_s``, spread by +-``jitter``."""

    initial_s: float = 0.2
    max_s: float = 5.0
    jitter: float = 0.2

    def grow(self, base_s: float | None) -> float:
        """The next base delay after ``base_s`` (None: the first retry), seconds."""
        return self.initial_s if base_s is None else min(self.max_s, base_s * 2)

    def spread(self, base_s: float) -> float:
        """``base_s`` with jitter applied, seconds."""
        return base_s * random.uniform(1 - self.jitter, 1 + self.jitter)


class NodeAgent:
    """The agent of one node.

    Args:
        config: The cluster config (controller address, intervals, fail-safe).
        node: This node's name in ``config``.
        gpus: The node's GPUs; by default discovered with
            :func:`greenllm.devices.discovery.get_gpus`.
        token: Agent token; by default ``$GREENLLM_AGENT_TOKEN`` or the state directory's
            (read at every connection attempt, so the agent may start before the controller).
        address: Override of ``config.controller.address``.
        backoff: Reconnect delays.
        run_shards: Run the shards the controller starts (see :mod:`workers.shardhost`);
            when False, shard commands are acked as unimplemented.
        batch_ticks: Telemetry ticks sent per message (GPUs are still sampled every
            telemetry interval); more ticks per message cost the controller less per sample.
            None: one control period's worth, since the controller acts once per period.

    Raises:
        ConfigError: ``node`` is not in ``config``.
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
    ) -> None:
        self.config = config
        self.node = config.node(node).name
        self.gpus: list[GPU] = list(gpus) if gpus is not None else get_gpus(config, node)
        self.failsafe_limits_w = [config.failsafe_limit_w(g.gpu_type) for g in self.gpus]
        self._token = token
        self._address = address or config.controller.address
        self._backoff = backoff or Backoff()
        if batch_ticks is None:
            batch_ticks = round(config.control_period_s / config.telemetry_interval_s)
        self.batch_ticks = max(1, batch_ticks)
        self._device_thread = ThreadPoolExecutor(1, thread_name_prefix=f"agent-{self.node}")
        #: The node's shard runners (None: shards are not run here).
        self.shards = ShardHost(self.node, self.gpus, config.state_dir) if run_shards else None
        self._last_contact_s = time.monotonic()
        #: True while the GPUs are held at their fail-safe limits.
        self.failsafe_active = False
        #: True while registered with a controller.
        self.registered = False
        #: Commands applied (successfully or not) since start.
        self.commands_applied = 0

    async def _on_device(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._device_thread, fn, *args)

    async def run(self) -> None:
        """Run until cancelled: cap the GPUs at their fail-safe limits, then connect,
        stream, reconnect with backoff, fail safe.

        Starting capped keeps the budget invariant from the first moment: the fail-safe
        limits are each GPU's static share of the budget, so a node that (re)joins never
        holds more than its share before the controller has planned for it.
        """
        errors = await self._on_device(
            devices.set_failsafe_limits, self.gpus, self.failsafe_limits_w
        )
        if errors:
            log.error("node %s: could not cap GPUs at start: %s", self.node, errors)
        watchdog = asyncio.create_task(self._watch_failsafe())
        base_s: float | None = None
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
                    base_s = None
                self.registered = False
                base_s = self._backoff.grow(base_s)
                await asyncio.sleep(self._backoff.spread(base_s))
        finally:
            watchdog.cancel()
            self._device_thread.shutdown(wait=False)

    async def _session(self) -> None:
        token = None
        if self.config.auth.enabled:
            token = self._token or agent_token(self.config.state_dir)
        inventory = await self._on_device(devices.inventory, self.gpus, self.failsafe_limits_w)
        register = agent_pb2.Register(
            node=self.node,
            gpus=inventory,
            agent_version=version("greenllm"),
            failsafe_active=self.failsafe_active,
            telemetry_message_interval_s=self.batch_ticks * self.config.telemetry_interval_s,
        )
        outbox: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue()

        async def requests() -> AsyncIterator[agent_pb2.AgentMessage]:
            yield agent_pb2.AgentMessage(register=register)
            while True:
                yield await outbox.get()

        async with aio_channel(self.config, self._address) as channel:
            call = agent_pb2_grpc.AgentStub(channel).Connect(
                requests(), metadata=bearer_metadata(token)
            )
            telemetry: asyncio.Task[None] | None = None
            try:
                async for message in call:
                    self._last_contact_s = time.monotonic()
                    if self.failsafe_active:
                        log.warning("node %s: controller is back; obeying it again", self.node)
                        self.failsafe_active = False
                    kind = message.WhichOneof("body")
                    if kind == "registered" and telemetry is None:
                        self._on_registered(message.registered)
                        telemetry = asyncio.create_task(self._stream_telemetry(outbox))
                    elif kind == "commands":
                        acks = await self._on_device(self._apply_all, message.commands.commands)
                        self.commands_applied += len(acks)
                        batch = agent_pb2.AckBatch(acks=acks)
                        outbox.put_nowait(agent_pb2.AgentMessage(acks=batch))
            finally:
                if telemetry is not None:
                    telemetry.cancel()
                call.cancel()
        log.warning("node %s: the controller closed the stream", self.node)

    def _apply_all(self, commands: Sequence[agent_pb2.Command]) -> list[agent_pb2.CommandAck]:
        """Apply a batch in order (on the device thread); one ack per command."""
        return [self._apply(c) for c in commands]

    def _apply(self, command: agent_pb2.Command) -> agent_pb2.CommandAck:
        if command.WhichOneof("action") == "set_failsafe_limits":
            return self._set_failsafe(command)
        if self.shards is not None and command.WhichOneof("action") in SHARD_ACTIONS:
            return apply_shard_command(self.shards, command)
        return devices.apply_command(self.gpus, self.node, command)

    def _set_failsafe(self, command: agent_pb2.Command) -> agent_pb2.CommandAck:
        """Adopt new fail-safe limits (they follow the budget); applied at once when the
        GPUs are held at their fail-safe limits now."""
        limits = list(command.set_failsafe_limits.limits_w)
        cid = command.command_id
        if len(limits) != len(self.gpus):
            reason = f"set_failsafe_limits: {len(limits)} limits for {len(self.gpus)} GPUs"
            return devices.failure(cid, grpc.StatusCode.INVALID_ARGUMENT, reason)
        for gpu, limit_w in zip(self.gpus, limits, strict=True):
            c = gpu.power_limit_constraints()
            if not c.min_power_limit_w <= limit_w <= c.max_power_limit_w:
                reason = (
                    f"set_failsafe_limits: {limit_w:g} W outside GPU {gpu.index}'s "
                    f"[{c.min_power_limit_w:g}, {c.max_power_limit_w:g}] W"
                )
                return devices.failure(cid, grpc.StatusCode.OUT_OF_RANGE, reason)
        self.failsafe_limits_w = limits
        if self.failsafe_active:
            errors = devices.set_failsafe_limits(self.gpus, limits)
            if errors:
                return devices.failure(cid, grpc.StatusCode.INTERNAL, "; ".join(errors))
        return agent_pb2.CommandAck(command_id=cid, success=True)

    def _on_registered(self, registered: agent_pb2.Registered) -> None:
        self.registered = True
        log.info("node %s: registered (session %s)", self.node, registered.session_id)

    async def _stream_telemetry(self, outbox: asyncio.Queue[agent_pb2.AgentMessage]) -> None:
        interval_s = self.config.telemetry_interval_s
        next_s = time.monotonic()
        samples = agent_pb2.GpuSamples()
        ticks = 0
        while True:
            samples.MergeFrom(await self._on_device(devices.sample, self.gpus))
            ticks += 1
            if ticks >= self.batch_ticks:
                shards = shard_samples(self.shards, time.time()) if self.shards else []
                if outbox.qsize() < MAX_QUEUED_BATCHES:
                    batch = agent_pb2.TelemetryBatch(
                        gpus=samples, shards=shards, failsafe_active=self.failsafe_active
                    )
                    outbox.put_nowait(agent_pb2.AgentMessage(telemetry=batch))
                samples = agent_pb2.GpuSamples()
                ticks = 0
            next_s = max(next_s + interval_s, time.monotonic())
            await asyncio.sleep(next_s - time.monotonic())

    async def _watch_failsafe(self) -> None:
        timeout_s = self.config.failsafe.timeout_s
        while True:
            await asyncio.sleep(min(0.5, timeout_s / 10))
            silent_s = time.monotonic() - self._last_contact_s
            if self.failsafe_active or silent_s <= timeout_s:
                continue
            errors = await self._on_device(
                devices.set_failsafe_limits, self.gpus, self.failsafe_limits_w
            )
            if errors:
                log.error("node %s: fail-safe limits not all applied: %s", self.node, errors)
                continue
            self.failsafe_active = True
            limits = ", ".join(
                f"{g.index}:{w:g} W" for g, w in zip(self.gpus, self.failsafe_limits_w, strict=True)
            )
            log.warning(
                "node %s: no controller for %.1f s; GPUs set to their fail-safe limits (%s)",
                self.node,
                silent_s,
                limits,
            )
