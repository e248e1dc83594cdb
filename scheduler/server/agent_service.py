"""``greenllm.v1.Agent``: one bidirectional stream per node agent, kept thin: each stream is a
:class:`GrpcSession` of the controller shell, which does the work. The node named by the
stream's credential (a node token) is the only node it may register as."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from greenllm.proto.v1 import agent_pb2, agent_pb2_grpc
from greenllm.rpc.auth import Credential
from scheduler.server.errors import BadInput, abort_with
from scheduler.shell.controller import ControllerShell

log = logging.getLogger(__name__)


class GrpcSession:
    """One agent stream, as the shell's :class:`~scheduler.shell.ports.Session`.

    Args:
        node: The node that registered on it.
    """

    def __init__(self, node: str) -> None:
        self.session_id = uuid.uuid4().hex
        self.node = node
        #: Messages for the agent; a BadInput ends the stream with its status, None ends it.
        self.outbox: asyncio.Queue[agent_pb2.ControllerMessage | BadInput | None] = asyncio.Queue()

    def deliver(self, message: agent_pb2.ControllerMessage) -> None:
        """Queue a message to the agent."""
        self.outbox.put_nowait(message)

    def close(self, reason: str) -> None:
        """End the stream with UNAVAILABLE (the agent reconnects)."""
        self.outbox.put_nowait(BadInput(grpc.StatusCode.UNAVAILABLE, reason))


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string (``ipv4:10.0.0.2:5123``, ``ipv6:[::1]:5123``)."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return ""
    host = rest.rpartition(":")[0]
    return host.strip("[]")


#: Verifies call metadata (see :meth:`scheduler.server.auth.AuthInterceptor.verify`).
Verifier = Callable[[tuple[tuple[str, str | bytes], ...] | None], Credential | None]


class AgentServicer(agent_pb2_grpc.AgentServicer):
    """Registers agents and passes their messages to the shell.

    Args:
        shell: The controller shell.
        verify: Tells what a stream's credential grants (None: auth is off, and no stream
            is bound to a node).
    """

    def __init__(self, shell: ControllerShell, verify: Verifier | None = None) -> None:
        self._shell = shell
        self._verify = verify

    def identity(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """The node the stream's credential is bound to (None: it names no node)."""
        if self._verify is None:
            return None
        credential = self._verify(tuple(context.invocation_metadata() or ()))
        return None if credential is None else credential.node

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
        session = GrpcSession(first.register.node)
        try:
            self._shell.register(
                first.register, session, peer_host(context.peer()), identity=self.identity(context)
            )
        except BadInput as exc:
            await abort_with(context, exc)
        log.info("node %s registered (session %s)", session.node, session.session_id)
        reader = asyncio.create_task(self._read(session, requests))
        config = self._shell.config
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
                yield message
        finally:
            reader.cancel()
            self._shell.disconnect(session)
            log.info("node %s disconnected", session.node)

    async def _read(
        self, session: GrpcSession, requests: AsyncIterator[agent_pb2.AgentMessage]
    ) -> None:
        try:
            async for message in requests:
                self._shell.on_message(session, message)
        except BadInput as exc:
            session.outbox.put_nowait(exc)
            return
        except grpc.aio.AioRpcError:
            pass
        session.outbox.put_nowait(None)
