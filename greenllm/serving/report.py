"""What a load run measured: one record per request, summed up into a :class:`LoadReport`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Linear-interpolated ``pct``-th percentile (0-100) of ``values`` (None when empty):
    numpy's default method, as the rest of the code computes percentiles."""
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), pct))


@dataclass
class RequestRecord:
    """One request of a load run.

    Attributes:
        sent_s: When it was sent, seconds from the start of the run.
        status: ``ok``, an HTTP status (``"429"``), or ``connect``, ``timeout``,
            ``stream_error``, ``unfinished`` (still running when the run ended).
        latency_s: Send to last byte, seconds.
        ttft_s: Send to first generated text, seconds.
        prompt_tokens: Prompt tokens (as the server counted them, else as sent).
        completion_tokens: Tokens generated (the server's count, else chunks seen).
        energy_j: ``usage.energy_j`` when the server returned it, joules.
        error: The error message, if any.
    """

    sent_s: float
    status: str = "ok"
    latency_s: float | None = None
    ttft_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    energy_j: float | None = None
    error: str | None = None

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first, seconds (None below 2 tokens)."""
        if self.latency_s is None or self.ttft_s is None or self.completion_tokens < 2:
            return None
        return (self.latency_s - self.ttft_s) / (self.completion_tokens - 1)


@dataclass(frozen=True)
class LoadReport:
    """A load run's figures.

    Attributes:
        endpoint: Base URL of the API.
        model: Model requested.
        api: ``completions`` or ``chat``.
        load: How arrivals were made (``poisson 5/s``, ``trace FILE at 10x``...).
        duration_s: Arrivals were sent during this long, seconds.
        wall_s: First send to last answer, seconds.
        sent: Requests sent.
        ok: Requests answered completely.
        errors: Failed requests by status.
        ttft_p50_s: Median time to first token of ok requests, seconds.
        ttft_p99_s: 99th percentile, seconds.
        tpot_p50_s: Median time per output token after the first, seconds.
        tpot_p99_s: 99th percentile, seconds.
        prompt_tokens: Prompt tokens of ok requests.
        completion_tokens: Tokens generated for ok requests.
        tokens_per_s: ``completion_tokens`` per wall second, tokens/s.
        energy_j: Sum of the ``usage.energy_j`` returned, joules (None: none returned).
        j_per_token: Energy per generated token over the requests that returned energy,
            J/token (None: no energy returned).
        notes: What was adjusted (prompts clamped to the context, time scaled...).
    """

    endpoint: str
    model: str
    api: str
    load: str
    duration_s: float
    wall_s: float
    sent: int
    ok: int
    errors: dict[str, int]
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    tpot_p50_s: float | None
    tpot_p99_s: float | None
    prompt_tokens: int
    completion_tokens: int
    tokens_per_s: float
    energy_j: float | None
    j_per_token: float | None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_records(
        cls, records: Sequence[RequestRecord], wall_s: float, **head: Any
    ) -> LoadReport:
        """Sum ``records`` up; ``head`` gives endpoint, model, api, load, duration_s, notes."""
        ok = [r for r in records if r.status == "ok"]
        ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
        tpot = [t for t in (r.tpot_s for r in ok) if t is not None]
        metered = [r for r in ok if r.energy_j is not None]
        metered_tokens = sum(r.completion_tokens for r in metered)
        energy_j = sum(r.energy_j or 0.0 for r in metered) if metered else None
        completion = sum(r.completion_tokens for r in ok)
        return cls(
            **head,
            wall_s=wall_s,
            sent=len(records),
            ok=len(ok),
            errors=dict(sorted(Counter(r.status for r in records if r.status != "ok").items())),
            ttft_p50_s=percentile(ttft, 50),
            ttft_p99_s=percentile(ttft, 99),
            tpot_p50_s=percentile(tpot, 50),
            tpot_p99_s=percentile(tpot, 99),
            prompt_tokens=sum(r.prompt_tokens for r in ok),
            completion_tokens=completion,
            tokens_per_s=completion / wall_s if wall_s > 0 else 0.0,
            energy_j=energy_j,
            j_per_token=energy_j / metered_tokens
            if energy_j is not None and metered_tokens
            else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict."""
        return asdict(self)

    def lines(self) -> list[str]:
        """The report as text lines for a terminal."""

        def ms(value: float | None) -> str:
            return "n/a" if value is None else f"{value * 1000:.1f} ms"

        errors = ", ".join(f"{k}: {v}" for k, v in self.errors.items()) or "none"
        energy = "n/a (the endpoint returns no usage.energy_j)"
        if self.j_per_token is not None and self.energy_j is not None:
            energy = f"{self.j_per_token:.4g} J/token ({self.energy_j:.1f} J in all)"
        return [
            f"endpoint     {self.endpoint}  model {self.model}  api {self.api}",
            f"load         {self.load}, {self.duration_s:g} s",
            f"requests     {self.sent} sent, {self.ok} ok, errors: {errors}",
            f"TTFT         p50 {ms(self.ttft_p50_s)}  p99 {ms(self.ttft_p99_s)}",
            f"TPOT         p50 {ms(self.tpot_p50_s)}  p99 {ms(self.tpot_p99_s)}",
            f"throughput   {self.tokens_per_s:.1f} tokens/s "
            f"({self.completion_tokens} tokens in {self.wall_s:.1f} s)",
            f"energy       {energy}",
            *(f"note         {n}" for n in self.notes),
        ]
