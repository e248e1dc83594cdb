"""Replay request arrivals against any OpenAI-compatible endpoint and measure what came back.

Each arrival becomes one streamed request (``/v1/completions`` by default, or
``/v1/chat/completions``) sent at its time, so time to first token is measured at the
client. The final usage chunk (``stream_options.include_usage``) gives token counts and,
from a greenllm endpoint, ``energy_j``. Prompts are synthesised from the shipped corpus:
ASCII text repeated to the arrival's prompt length in bytes, which is exactly its length in
tokens for the byte-level built-in models (other tokenizers count fewer tokens; the report
then shows the server's counts). When the endpoint's model card gives its context
(``max_model_len``), requests are clamped to fit it and the report says how many were.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx

from greenllm.errors import GreenllmError
from greenllm.serving.arrivals import Arrival, fit_tokens
from greenllm.serving.report import LoadReport, RequestRecord

#: Seconds between progress lines on long runs.
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class LoadOptions:
    """How to send the load.

    Attributes:
        endpoint: Base URL (``http://host:port`` or ``http://host:port/v1``).
        model: Model to ask for (None: the endpoint's first).
        api: ``completions`` or ``chat``.
        context_tokens: The model's context, tokens (None: from ``max_model_len``, if any).
        max_tokens_cap: Upper bound on each request's ``max_tokens`` (None: none).
        drain_timeout_s: After the last arrival, how long to wait for answers, seconds.
        request_timeout_s: Longest a single request may take, seconds.
    """

    endpoint: str
    model: str | None = None
    api: str = "completions"
    context_tokens: int | None = None
    max_tokens_cap: int | None = None
    drain_timeout_s: float = 120.0
    request_timeout_s: float = 300.0


def base_url(endpoint: str) -> str:
    """``endpoint`` with ``/v1`` at the end (added when missing)."""
    url = endpoint.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise GreenllmError(f"endpoint {endpoint!r} must start with http:// or https://")
    return url if url.endswith("/v1") else f"{url}/v1"


def prompt_source() -> str:
    """The ASCII text prompts are cut from: the shipped corpus's held-out split.

    Reading it imports the workloads package, and with it torch (seconds on a busy
    machine): a load reads it once, before its clock starts.
    """
    from greenllm.workloads.corpus import corpus_text  # the package imports torch: only here

    return "".join(c for c in corpus_text("heldout") if c.isascii()) or "power "


def prompt_text(tokens: int, source: str | None = None) -> str:
    """ASCII text of ``tokens`` bytes cut from ``source`` (repeated as needed; default
    :func:`prompt_source`)."""
    source = source or prompt_source()
    return (source * (tokens // len(source) + 1))[:tokens]


def fit_to_context(arrivals: Sequence[Arrival], context_tokens: int) -> tuple[list[Arrival], int]:
    """Arrivals shrunk to fit the context (output kept first, prompt cut; at least one
    token each), and how many were changed."""
    fitted, changed = [], 0
    for a in arrivals:
        prompt, out = fit_tokens(a.prompt_tokens, a.max_tokens, context_tokens)
        new = replace(a, prompt_tokens=prompt, max_tokens=out)
        changed += new != a
        fitted.append(new)
    return fitted, changed


async def discover(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    """The endpoint's model cards (``GET /v1/models``).

    Raises:
        GreenllmError: Unreachable, or not an OpenAI-compatible answer.
    """
    try:
        reply = await client.get(f"{url}/models", timeout=10.0)
    except httpx.HTTPError as exc:
        raise GreenllmError(f"cannot reach endpoint {url}: {exc or type(exc).__name__}") from None
    if reply.status_code != 200:
        raise GreenllmError(f"endpoint {url}: GET /models answered {reply.status_code}")
    try:
        cards = reply.json()["data"]
        assert isinstance(cards, list)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise GreenllmError(f"endpoint {url}: GET /models is not an OpenAI model list") from None
    return [c for c in cards if isinstance(c, dict) and "id" in c]


class LoadClient:
    """Sends one load and keeps a record per request.

    Args:
        options: Where and how to send.
        progress: Called with a progress line every :data:`PROGRESS_EVERY_S` on runs
            longer than twice that (None: silent).
        transport: httpx transport (tests; default: the network).
    """

    def __init__(
        self,
        options: LoadOptions,
        progress: Callable[[str], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.options = options
        self._transport = transport
        self.url = base_url(options.endpoint)
        self.progress = progress
        self.records: list[RequestRecord] = []
        self.notes: list[str] = []
        self.model = options.model or ""
        self._start = 0.0
        self._source = ""

    async def run(self, arrivals: Sequence[Arrival], duration_s: float, load: str) -> LoadReport:
        """Send the arrivals due before ``duration_s`` and wait for their answers."""
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            limits=limits, timeout=self.options.request_timeout_s, transport=self._transport
        ) as c:
            cards = await discover(c, self.url)
            if not cards:
                raise GreenllmError(f"endpoint {self.url} serves no model")
            card = next((m for m in cards if m["id"] == self.model), None)
            if self.model and card is None:
                names = ", ".join(str(m["id"]) for m in cards)
                raise GreenllmError(
                    f"endpoint {self.url} serves no model {self.model!r} (has: {names})"
                )
            if not self.model:
                card, self.model = cards[0], str(cards[0]["id"])
            due = [a for a in arrivals if a.time_s < duration_s]
            due = self._fit(due, card)
            # Before the clock starts: made at the first send, the prompt text (torch's
            # import) held the event loop for seconds and the arrivals due meanwhile left
            # in one burst.
            self._source = prompt_source()
            self._start = time.monotonic()
            tasks = []
            ticker = asyncio.create_task(self._ticker(duration_s)) if self.progress else None
            for arrival in due:
                wait_s = self._start + arrival.time_s - time.monotonic()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                record = RequestRecord(sent_s=time.monotonic() - self._start)
                self.records.append(record)
                tasks.append(asyncio.create_task(self._send(c, arrival, record)))
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=self.options.drain_timeout_s)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            if ticker is not None:
                ticker.cancel()
        wall_s = max((r.sent_s + (r.latency_s or 0.0) for r in self.records), default=0.0)
        return LoadReport.from_records(
            self.records,
            wall_s,
            endpoint=self.url,
            model=self.model,
            api=self.options.api,
            load=load,
            duration_s=duration_s,
            notes=self.notes,
        )

    def _fit(self, due: list[Arrival], card: dict[str, Any] | None) -> list[Arrival]:
        cap = self.options.max_tokens_cap
        if cap is not None:
            capped = sum(a.max_tokens > cap for a in due)
            due = [replace(a, max_tokens=min(a.max_tokens, cap)) for a in due]
            if capped:
                self.notes.append(f"{capped} requests had max_tokens capped to {cap}")
        context = self.options.context_tokens
        if context is None and card is not None and isinstance(card.get("max_model_len"), int):
            context = int(card["max_model_len"])
        if context:
            due, changed = fit_to_context(due, context)
            if changed:
                self.notes.append(
                    f"{changed} of {len(due)} requests clamped to the model's context of "
                    f"{context} tokens (prompt cut first)"
                )
        zero = sum(a.max_tokens < 1 for a in due)
        if zero:
            due = [replace(a, max_tokens=max(1, a.max_tokens)) for a in due]
            self.notes.append(f"{zero} requests asked for 0 tokens; sent with max_tokens 1")
        return due

    async def _ticker(self, duration_s: float) -> None:
        if duration_s < 2 * PROGRESS_EVERY_S or self.progress is None:
            return
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            done = [r for r in self.records if r.latency_s is not None or r.status != "ok"]
            failed = sum(r.status != "ok" for r in done)
            elapsed_s = time.monotonic() - self._start
            self.progress(
                f"load: {elapsed_s:.0f}/{duration_s:g} s, {len(self.records)} sent, "
                f"{len(done)} answered, {failed} errors"
            )

    def _body(self, arrival: Arrival) -> tuple[str, dict[str, Any]]:
        text = prompt_text(arrival.prompt_tokens, self._source or None)
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": arrival.max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.options.api == "chat":
            body["messages"] = [{"role": "user", "content": text}]
            return f"{self.url}/chat/completions", body
        body["prompt"] = text
        return f"{self.url}/completions", body

    async def _send(self, client: httpx.AsyncClient, arrival: Arrival, rec: RequestRecord) -> None:
        url, body = self._body(arrival)
        rec.prompt_tokens = arrival.prompt_tokens
        t0 = time.monotonic()
        chunks = 0
        try:
            async with client.stream("POST", url, json=body) as reply:
                if reply.status_code != 200:
                    rec.status = str(reply.status_code)
                    rec.error = (await reply.aread()).decode(errors="replace")[:300]
                    return
                async for line in reply.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if isinstance(chunk, dict) and chunk.get("error"):
                        rec.status, rec.error = "stream_error", str(chunk["error"])[:300]
                        return
                    if _chunk_text(chunk):
                        chunks += 1
                        if rec.ttft_s is None:
                            rec.ttft_s = time.monotonic() - t0
                    usage = chunk.get("usage") if isinstance(chunk, dict) else None
                    if isinstance(usage, dict):
                        rec.prompt_tokens = int(usage.get("prompt_tokens", rec.prompt_tokens))
                        rec.completion_tokens = int(usage.get("completion_tokens", 0))
                        if isinstance(usage.get("energy_j"), (int, float)):
                            rec.energy_j = float(usage["energy_j"])
            rec.completion_tokens = rec.completion_tokens or chunks
            rec.latency_s = time.monotonic() - t0
        except asyncio.CancelledError:
            rec.status, rec.error = "unfinished", "still running when the run ended"
            raise
        except httpx.TimeoutException as exc:
            rec.status, rec.error = "timeout", str(exc) or "timed out"
        except httpx.HTTPError as exc:
            rec.status, rec.error = "connect", str(exc) or type(exc).__name__
        except (ValueError, TypeError) as exc:
            rec.status, rec.error = "stream_error", f"unreadable stream: {exc}"


def _chunk_text(chunk: Any) -> str:
    """The generated text in one stream chunk ("" if none)."""
    if not isinstance(chunk, dict):
        return ""
    choices = chunk.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    choice = choices[0]
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    return text if isinstance(text, str) else ""


def run_load(
    arrivals: Sequence[Arrival],
    duration_s: float,
    options: LoadOptions,
    load: str,
    progress: Callable[[str], None] | None = None,
) -> LoadReport:
    """Send a load and report (see :class:`LoadClient`).

    Raises:
        GreenllmError: Bad endpoint URL, unreachable endpoint, no model served.
    """
    return asyncio.run(LoadClient(options, progress).run(arrivals, duration_s, load))
