"""The load client against a fake endpoint (httpx mock transport): what it sends, what it
counts, and the arrivals it makes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from greenllm.errors import ConfigError, GreenllmError
from greenllm.serving.arrivals import (
    CONVERSATION_TRACE,
    Arrival,
    bursty_arrivals,
    poisson_arrivals,
    read_trace,
)
from greenllm.serving.loadclient import LoadClient, LoadOptions, base_url, prompt_text
from greenllm.serving.report import LoadReport


def sse(*chunks: object) -> bytes:
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def fake_endpoint(energy: bool = True, context: int | None = 64) -> httpx.MockTransport:
    """Answers by prompt: 'full' -> 429, 'down' -> stream error, else three tokens."""
    sent: list[dict[str, object]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            card: dict[str, object] = {"id": "m", "object": "model"}
            if context:
                card["max_model_len"] = context
            return httpx.Response(200, json={"object": "list", "data": [card]})
        body = json.loads(request.content)
        sent.append(body)
        prompt = str(body.get("prompt", ""))
        if prompt.startswith("full"):
            error = {"error": {"message": "busy", "type": "x", "param": None, "code": None}}
            return httpx.Response(429, json=error, headers={"Retry-After": "1"})
        if prompt.startswith("down"):
            return httpx.Response(200, content=sse({"error": {"message": "replica stopped"}}))
        usage: dict[str, object] = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        if energy:
            usage["energy_j"] = 1.5
        chunks = [{"choices": [{"text": t, "index": 0, "finish_reason": None}]} for t in "abc"]
        return httpx.Response(200, content=sse(*chunks, {"choices": [], "usage": usage}))

    transport = httpx.MockTransport(handle)
    transport.sent = sent  # type: ignore[attr-defined]
    return transport


def run(arrivals: list[Arrival], transport: httpx.MockTransport, **options: object) -> LoadReport:
    client = LoadClient(LoadOptions("http://fake", **options), transport=transport)  # type: ignore[arg-type]
    return asyncio.run(client.run(arrivals, 10.0, "test"))


def test_counts_tokens_latency_and_energy_per_token() -> None:
    transport = fake_endpoint()
    report = run([Arrival(0.0, 4, 3), Arrival(0.01, 4, 3)], transport)
    assert (report.sent, report.ok, report.errors) == (2, 2, {})
    assert report.completion_tokens == 6 and report.prompt_tokens == 10
    assert report.energy_j == 3.0 and report.j_per_token == 0.5
    assert report.ttft_p50_s is not None and report.tpot_p99_s is not None
    body = transport.sent[0]  # type: ignore[attr-defined]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "m" and body["max_tokens"] == 3


def test_requests_leave_at_their_arrival_times_when_the_prompt_text_is_slow_to_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reading the corpus imports torch (seconds on a busy machine); done at the first send,
    it held the event loop and the arrivals due meanwhile left late, in one burst."""
    import greenllm.workloads.corpus as corpus

    read = corpus.corpus_text

    def slow_corpus_text(split: str) -> str:
        time.sleep(0.4)
        return read(split)  # type: ignore[arg-type]

    monkeypatch.setattr(corpus, "corpus_text", slow_corpus_text)
    inner = fake_endpoint()
    received_s: list[float] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/models":
            received_s.append(time.monotonic())
        reply = inner.handler(request)
        assert isinstance(reply, httpx.Response)
        return reply

    arrivals = [Arrival(0.05 * i, 8, 2) for i in range(1, 9)]
    client = LoadClient(LoadOptions("http://fake"), transport=httpx.MockTransport(handle))
    report = asyncio.run(client.run(arrivals, 10.0, "test"))
    assert report.ok == len(arrivals) == len(received_s)
    late_s = [t - client._start - a.time_s for t, a in zip(received_s, arrivals, strict=True)]
    assert max(late_s) < 0.2, late_s


def test_errors_by_status_and_energy_na_without_usage_energy() -> None:
    full = Arrival(0.0, 4, 3)
    arrivals = [full, Arrival(0.0, 4, 3), Arrival(0.0, 4, 3)]
    client = LoadClient(LoadOptions("http://fake"), transport=fake_endpoint(energy=False))
    prompts = iter(["full", "down", "fine"])
    original = client._body

    def body(arrival: Arrival) -> tuple[str, dict[str, object]]:
        url, doc = original(arrival)
        doc["prompt"] = next(prompts)
        return url, doc

    client._body = body  # type: ignore[method-assign]
    report = asyncio.run(client.run(arrivals, 10.0, "test"))
    assert report.errors == {"429": 1, "stream_error": 1} and report.ok == 1
    assert report.energy_j is None and report.j_per_token is None
    assert any("n/a" in line for line in report.lines())


def test_requests_are_clamped_to_the_advertised_context_and_the_report_says_so() -> None:
    transport = fake_endpoint(context=64)
    report = run([Arrival(0.0, 500, 40), Arrival(0.0, 10, 0)], transport, max_tokens_cap=30)
    sent = transport.sent  # type: ignore[attr-defined]
    assert [len(str(b["prompt"])) + int(b["max_tokens"]) for b in sent] == [64, 11]
    assert all(int(b["max_tokens"]) >= 1 for b in sent)
    notes = " ".join(report.notes)
    assert "capped to 30" in notes and "context of 64 tokens" in notes


def test_unreachable_or_bad_endpoints_are_one_clear_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(GreenllmError, match="cannot reach endpoint"):
        run([Arrival(0.0, 1, 1)], httpx.MockTransport(refuse))
    with pytest.raises(GreenllmError, match="serves no model 'x'"):
        run([Arrival(0.0, 1, 1)], fake_endpoint(), model="x")
    with pytest.raises(GreenllmError, match="http://"):
        base_url("localhost:8000")
    assert base_url("http://h:1/") == "http://h:1/v1" == base_url("http://h:1/v1")


def test_arrivals_and_prompts() -> None:
    trace = read_trace(CONVERSATION_TRACE, time_scale=60)
    assert trace[0].time_s == 0 and 4.9 < trace[-1].time_s < 5.0  # five minutes in five s
    assert (trace[0].prompt_tokens, trace[0].max_tokens) == (374, 44)
    poisson = poisson_arrivals(50, 20, 8, 4, seed=1)
    assert 900 < len(poisson) < 1100 and all(a.prompt_tokens == 8 for a in poisson)
    bursty = bursty_arrivals(50, 20, 8, 4, seed=1)
    assert bursty and all(0 <= a.time_s < 20 for a in bursty)
    text = prompt_text(1000)
    assert len(text.encode()) == 1000 and text.isascii()


def test_bad_trace_files(tmp_path: Path) -> None:
    cases = {
        "TIMESTAMP,ContextTokens\n1,2\n": "missing column(s) GeneratedTokens",
        "TIMESTAMP,ContextTokens,GeneratedTokens\nsoon,2,3\n": ":2: TIMESTAMP 'soon'",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n1,x,3\n": "ContextTokens must be a whole",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n": "no requests",
    }
    for text, message in cases.items():
        path = tmp_path / "t.csv"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_trace(path)
