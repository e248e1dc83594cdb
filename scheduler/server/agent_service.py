"""``greenllm.v1.Agent``: one bidirectional stream per node agent (kept thin: the state and
the control loop do the work)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from greenllm.proto.v1 import agent_pb2, agent_pb2_grpc
from scheduler.server.errors import BadInput, abort_with
from scheduler.server.loop import ControlLoop
from scheduler.server.nodes import Session
from scheduler.server.state import ClusterState

log = logging.getLogger(__name__)


class AgentServicer(agent_pb2_grpc.AgentServicer):
    """Registers agents, ingests their telemetry and acks, and streams their commands."""

    def __init__(self, state: ClusterState, loop: ControlLoop) -> None:
        self._state = state
        self._loop = loop
        self._failures_logged: set[tuple[str, str, int]] = set()

    async def Connect(
        self,
        request_iterator: AsyncIterator[agent_pb2.AgentMessage],
        context: grpc.aio.ServicerContext[agent_pb2.AgentMessage, agent_pb2.ControllerMessage],
    ) -> AsyncIterator[agent_pb2.ControllerMessage]:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            return
        if first.WhichOneof("body") != "register":
            await abort_with(
                context,
                BadInput(grpc.StatusCode.FAILED_PRECONDITION, "the first message must be register"),
            )
        try:
            session = self._state.register(first.register)
        except BadInput as exc:
            await abort_with(context, exc)
        log.info("node %s registered (session %s)", session.node, session.session_id)
        reader = asyncio.create_task(self._read(session, requests))
        config = self._state.config
        self._loop.wake.set()
        try:
            yield agent_pb2.ControllerMessage(
                registered=agent_pb2.Registered(
                    session_id=session.session_id,
                    control_period_s=config.control_period_s,
                    telemetry_interval_s=config.telemetry_interval_s,
                )
            )
            while True:
                message = await session.outbox.get()
                if message is None:
                    return
                if isinstance(message, BadInput):
                    await abort_with(context, message)
                assert isinstance(message, agent_pb2.ControllerMessage)
                yield message
        finally:
            reader.cancel()
            self._state.disconnect(session)
            log.info("node %s disconnected", session.node)

    async def _read(
        self, session: Session, requests: AsyncIterator[agent_pb2.AgentMessage]
    ) -> None:
        try:
            async for message in requests:
                kind = message.WhichOneof("body")
                if kind == "telemetry":
                    self._state.ingest(session, message.telemetry)
                elif kind == "acks":
                    for ack in message.acks.acks:
                        self._on_ack(session, ack)
                else:
                    raise BadInput(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"node {session.node}: unexpected {kind or 'empty message'} after register",
                    )
        except BadInput as exc:
            session.outbox.put_nowait(exc)
            return
        session.outbox.put_nowait(None)

    def _on_ack(self, session: Session, ack: agent_pb2.CommandAck) -> None:
        cmd = self._state.on_ack(session, ack)
        if not ack.success:
            key = (cmd.node, cmd.action, ack.code)
            level = logging.DEBUG if key in self._failures_logged else logging.WARNING
            self._failures_logged.add(key)
            log.log(level, "node %s: command %s failed: %s", cmd.node, cmd.action, ack.reason)
        if self._loop.last_actions.raises_deferred and not any(
            p.action == "set_power_limit" for p in self._state.pending.values()
        ):
            self._loop.wake.set()
