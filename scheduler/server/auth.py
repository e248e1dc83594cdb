"""Bearer-token check on every RPC: agent and operator tokens are distinct roles.

No or a wrong token: UNAUTHENTICATED. A valid token of the wrong role:
PERMISSION_DENIED. A node's token (``node:<name>:<mac>``) is an agent token, good for the
Agent service only, where it binds the stream to that node (see
:func:`scheduler.server.agent_service.AgentServicer`). Health and reflection accept any
valid token.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from greenllm.rpc.auth import Credential, Role, Tokens, token_from_metadata

log = logging.getLogger(__name__)

#: Service prefix -> the role its methods need.
ROLE_OF_SERVICE = {
    "/greenllm.v1.Agent/": Role.AGENT,
    "/greenllm.v1.Cluster/": Role.OPERATOR,
}


def required_role(method: str) -> Role | None:
    """The role ``method`` needs (None: any valid token)."""
    for prefix, role in ROLE_OF_SERVICE.items():
        if method.startswith(prefix):
            return role
    return None


def _denying(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> Any:
    async def abort(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token of every call against the cluster's tokens."""

    def __init__(self, tokens: Tokens) -> None:
        self._tokens = tokens

    def verify(self, metadata: tuple[tuple[str, str | bytes], ...] | None) -> Credential | None:
        """What the bearer token in call ``metadata`` grants (None: no or a wrong token)."""
        token = token_from_metadata(metadata)
        return None if token is None else self._tokens.verify(token)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        credential = self.verify(handler_call_details.invocation_metadata)
        if credential is None:
            token = token_from_metadata(handler_call_details.invocation_metadata)
            why = "missing bearer token" if token is None else "invalid token"
            log.warning("rejected %s: %s", method, why)
            return _denying(handler, grpc.StatusCode.UNAUTHENTICATED, f"{why} for {method}")
        role = credential.role
        needed = required_role(method)
        if needed is not None and role != needed:
            log.warning("rejected %s: %s token", method, role.value)
            return _denying(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} needs the {needed.value} token, not the {role.value} token",
            )
        return handler
