"""The energy proxy in front of a fake OpenAI-compatible engine (no vLLM needed): what it
asks the engine for, what the client gets, and that the books close.

The fake engine streams a fixed number of tokens with vLLM's continuous usage stats, and
the fake GPU's energy counter rises at a fixed power with the real clock.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from workers.serve.energy_proxy import EnergyProxy
from workers.serve.proxy_books import ProxyBooks, WorkCosts
from workers.serve.server import ApiServer

pytestmark = pytest.mark.timeout(120)

PROMPT_TOKENS = 7
TOKEN_S = 0.01


class Counter:
    """A GPU energy counter drawing ``watts`` since it was made."""

    def __init__(self, watts: float = 200.0) -> None:
        self.start_s = time.monotonic()
        self.watts = watts

    def read(self) -> float:
        return (time.monotonic() - self.start_s) * self.watts


def fake_engine(seen: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "m", "object": "model"}]}

    @app.post("/v1/chat/completions")
    @app.post("/v1/completions")
    async def generate(request: Request) -> Any:
        import asyncio

        body = await request.json()
        seen.append(body)
        if body.get("model") != "m":
            return JSONResponse({"error": {"message": "no such model", "code": 404}}, 404)
        n = int(body.get("max_tokens") or 4)
        chat = request.url.path.endswith("chat/completions")
        if body.get("logprobs"):  # forwarded whole by the proxy
            await asyncio.sleep(n * TOKEN_S)
            return {
                "id": "c",
                "object": "text_completion",
                "choices": [{"index": 0, "text": "x" * n, "finish_reason": "length"}],
                "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": n},
            }

        async def events() -> Any:
            for i in range(n):
                await asyncio.sleep(TOKEN_S)
                choice: dict[str, Any] = {"index": 0, "finish_reason": None}
                if chat:
                    choice["delta"] = {"content": f"t{i} "}
                else:
                    choice["text"] = f"t{i} "
                if i == n - 1:
                    choice["finish_reason"] = "length"
                usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": i + 1}
                chunk = {"id": "c", "object": "chunk", "created": 1, "model": "m"}
                yield f"data: {json.dumps({**chunk, 'choices': [choice], 'usage': usage})}\n\n"
            total = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": n}
            yield f"data: {json.dumps({'id': 'c', 'choices': [], 'usage': total})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


class Rig:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.engine = ApiServer(app=fake_engine(self.seen)).start()
        self.counter = Counter()
        self.books = ProxyBooks(self.counter.read, WorkCosts(0.001, 0.01), time.monotonic)
        self.proxy = EnergyProxy(self.engine.root_url, self.books).start()
        self.api = openai.OpenAI(base_url=self.proxy.base_url, api_key="x", max_retries=0)

    def stop(self) -> None:
        self.proxy.stop()
        self.engine.stop()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    try:
        yield r
    finally:
        r.stop()


def energy(usage: Any) -> float:
    return float(getattr(usage, "energy_j", 0.0))


def test_answers_as_the_client_asked_with_energy(rig: Rig) -> None:
    done = rig.api.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=5
    )
    assert done.choices[0].message.content == "t0 t1 t2 t3 t4 "
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 5 and energy(done.usage) > 0
    # the engine was asked for a stream with exact usage in every chunk
    assert rig.seen[-1]["stream"] is True
    assert rig.seen[-1]["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}

    chunks = list(
        rig.api.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and energy(chunks[-1].usage) > 0
    assert all(c.usage is None for c in chunks[:-1])  # usage only where the client asked
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == "t0 t1 t2 t3 "

    plain = list(rig.api.completions.create(model="m", prompt="x", max_tokens=3, stream=True))
    assert plain[-1].choices[0].finish_reason == "length" and energy(plain[-1].usage) > 0
    assert all(c.usage is None for c in plain[:-1])

    whole = rig.api.completions.create(model="m", prompt="x", max_tokens=3, logprobs=1)
    assert "stream" not in rig.seen[-1] and energy(whole.usage) > 0

    with pytest.raises(openai.NotFoundError):  # engine errors pass through
        rig.api.completions.create(model="nope", prompt="x", max_tokens=3)
    assert [m.id for m in rig.api.models.list()] == ["m"]


def test_request_energies_plus_idle_equal_the_metered_energy(rig: Rig) -> None:
    def ask(i: int) -> float:
        if i % 3 == 0:
            chunks = rig.api.completions.create(
                model="m",
                prompt="p",
                max_tokens=2 + i % 7,
                stream=True,
                stream_options={"include_usage": True},
            )
            return energy(list(chunks)[-1].usage)
        done = rig.api.completions.create(model="m", prompt="p", max_tokens=2 + i % 7)
        return energy(done.usage)

    stop = threading.Event()

    def tick() -> None:  # the replica's telemetry interval
        while not stop.wait(0.05):
            rig.books.book()

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            energies = list(pool.map(ask, range(30)))
    finally:
        stop.set()
        ticker.join(5)
    time.sleep(0.2)
    snap = rig.books.snapshot()
    assert all(e > 0 for e in energies)
    assert sum(energies) + snap.energy.idle_j == pytest.approx(snap.energy.metered_j, rel=1e-6)
    assert snap.requests == 30 and snap.in_flight == 0
    assert snap.decode_tokens == sum(2 + i % 7 for i in range(30))
    assert snap.prefill_tokens == 30 * PROMPT_TOKENS
