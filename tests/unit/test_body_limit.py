"""The inference endpoints cap what they read (issue 25): one 20 MB body added 220 MB to
the server. The ASGI middleware both the replica's API and the cluster ingress use answers
413 before reading a body whose length is above the cap, and stops reading a chunked one
at the cap. Driven as ASGI calls, no sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from workers.serve.bodylimit import DEFAULT_MAX_BODY_BYTES, BodyLimit

CAP = 1024


class App:
    """The app behind the limit: records the body it read."""

    def __init__(self) -> None:
        self.body = b""
        self.called = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True
        while True:
            message = await receive()
            self.body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def call(headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, dict, int, App]:  # type: ignore[type-arg]
    """Run one request; returns (status, JSON body or {}, chunks read, the app)."""
    app = App()
    read = 0
    sent: list[dict] = []  # type: ignore[type-arg]

    async def receive() -> dict:  # type: ignore[type-arg]
        nonlocal read
        read += 1
        return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": headers}
    asyncio.run(BodyLimit(app, CAP)(scope, receive, send))
    status = sent[0]["status"]
    body = json.loads(sent[1]["body"]) if status != 200 else {}
    return status, body, read, app


def test_a_body_longer_than_the_cap_is_refused_before_it_is_read() -> None:
    twenty_mb = 20 * 1024 * 1024
    status, body, read, app = call([(b"content-length", str(twenty_mb).encode())], [b"x"])
    assert status == 413 and read == 0 and not app.called
    assert body["error"]["code"] == "request_too_large"
    assert f"{twenty_mb} bytes" in body["error"]["message"] and str(CAP) in body["error"]["message"]


def test_a_chunked_body_is_read_only_up_to_the_cap() -> None:
    chunks = [b"x" * 600] * 100  # 60 KB sent, no length given
    status, _, read, app = call([], chunks)
    assert status == 413 and read == 2 and not app.called


def test_bodies_within_the_cap_pass_whole() -> None:
    status, _, _, app = call([(b"content-length", b"1000")], [b"y" * 500, b"y" * 500])
    assert status == 200 and app.body == b"y" * 1000
    status, _, _, app = call([], [b"z" * 300, b"z" * 300])
    assert status == 200 and app.body == b"z" * 600
    assert 1024 * 1024 <= DEFAULT_MAX_BODY_BYTES <= 16 * 1024 * 1024
