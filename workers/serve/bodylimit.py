"""A cap on request bodies for the HTTP APIs (a replica's OpenAI app, the cluster ingress).

An ASGI middleware: a request whose ``Content-Length`` is above the cap is answered 413 (an
OpenAI error body) before any of its body is read; a body sent without a length (chunked)
is read only up to the cap, then answered 413 the same way. Either way the server holds at
most the cap of a request's body in memory.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Default cap on a request body, bytes (4 MiB: a prompt filling any built-in model's
#: context many times over).
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


class BodyLimit:
    """Answer 413 to a request whose body is larger than ``max_bytes``.

    Args:
        app: The ASGI app behind it.
        max_bytes: The cap, bytes.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None:
            if length > self.max_bytes:
                await self._too_large(send, length)
                return
            await self.app(scope, receive, send)
            return
        # no length given: read up to the cap, then hand the body on
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _too_large(self, send: Send, length: int | None) -> None:
        sent = f"{length} bytes" if length is not None else "more"
        message = (
            f"Request body too large: {sent}, the most this server reads is {self.max_bytes} bytes."
        )
        error = {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }  # an OpenAI error body (workers.serve.schemas.error_body; no torch imported here)
        payload = json.dumps({"error": error}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
