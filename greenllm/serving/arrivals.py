"""Request arrivals for a load client: Poisson, bursty, or an Azure LLM-inference trace.

Bursty load is an on/off modulated Poisson process: ON and OFF periods of exponential
length alternate (means ``duty * cycle_s`` and ``(1 - duty) * cycle_s``); during ON
periods requests arrive at ``rate_per_s / duty``, so the mean rate is still ``rate_per_s``
but arrivals come in bursts.

A trace is CSV in the format of the Azure LLM-inference traces (2023/2024): a header with at
least ``TIMESTAMP,ContextTokens,GeneratedTokens``, one request per row; timestamps are ISO
date-times (``2023-11-16 18:15:46.6805900``) or plain seconds, and arrivals are made
relative to the earliest. A slice of the 2023 conversation trace ships as
:data:`CONVERSATION_TRACE` (see the README beside it for its source and licence).
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from greenllm.errors import ConfigError
from greenllm.jobspec import InferSection

#: Share of time a bursty load is ON.
BURST_DUTY = 0.25
#: Mean length of one ON + OFF cycle of a bursty load, seconds.
BURST_CYCLE_S = 8.0
#: Columns a trace file must have.
TRACE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
#: The first five minutes of the Azure LLM conversation trace (2023-11-16), CC-BY 4.0.
CONVERSATION_TRACE = Path(__file__).parent.parent / "data" / "traces" / "azure-conv-2023-5min.csv"


@dataclass(frozen=True)
class Arrival:
    """One request of a load.

    Attributes:
        time_s: When it is sent, seconds from the start of the load.
        prompt_tokens: Prompt length, tokens.
        max_tokens: Tokens to generate.
    """

    time_s: float
    prompt_tokens: int
    max_tokens: int


def fit_tokens(prompt_tokens: int, output_tokens: int, context_tokens: int) -> tuple[int, int]:
    """A request's prompt and output tokens shrunk to fit a model's context, as a client of
    a model with that context sends it: the output kept first, the prompt cut; at least one
    token each.

    Args:
        prompt_tokens: Prompt tokens asked for.
        output_tokens: Output tokens asked for.
        context_tokens: The model's context (prompt plus output), tokens.

    Returns:
        ``(prompt_tokens, output_tokens)`` that fit.
    """
    out = max(1, min(output_tokens, context_tokens - 1))
    prompt = max(1, min(prompt_tokens, context_tokens - out))
    return prompt, max(1, min(out, context_tokens - prompt))


def poisson_arrivals(
    rate_per_s: float, duration_s: float, prompt_tokens: int, max_tokens: int, seed: int = 0
) -> list[Arrival]:
    """Poisson arrivals at ``rate_per_s`` requests/s during ``duration_s`` seconds."""
    rng = random.Random(seed)
    arrivals: list[Arrival] = []
    t = rng.expovariate(rate_per_s)
    while t < duration_s:
        arrivals.append(Arrival(t, prompt_tokens, max_tokens))
        t += rng.expovariate(rate_per_s)
    return arrivals


def bursty_arrivals(
    rate_per_s: float,
    duration_s: float,
    prompt_tokens: int,
    max_tokens: int,
    seed: int = 0,
    duty: float = BURST_DUTY,
    cycle_s: float = BURST_CYCLE_S,
) -> list[Arrival]:
    """On/off modulated Poisson arrivals with mean rate ``rate_per_s`` (see module doc).

    Raises:
        ValueError: ``duty`` is not in (0, 1] or ``cycle_s`` is not positive.
    """
    if not 0 < duty <= 1 or cycle_s <= 0:
        raise ValueError("duty must be in (0, 1] and cycle_s positive")
    rng = random.Random(seed)
    on_rate_per_s = rate_per_s / duty
    arrivals: list[Arrival] = []
    t = 0.0
    on = rng.random() < duty
    while t < duration_s:
        mean_s = cycle_s * (duty if on else 1.0 - duty)
        end_s = min(duration_s, t + rng.expovariate(1.0 / mean_s))
        if on:
            t += rng.expovariate(on_rate_per_s)
            while t < end_s:
                arrivals.append(Arrival(t, prompt_tokens, max_tokens))
                t += rng.expovariate(on_rate_per_s)
        t = end_s
        on = not on or duty == 1.0
    return arrivals


def _parse_time_s(text: str) -> tuple[float, bool]:
    """(seconds, is a date-time) of one TIMESTAMP cell; ValueError when neither."""
    try:
        return float(text), False
    except ValueError:
        return datetime.fromisoformat(text.strip()).timestamp(), True


def _count(row: dict[str, str], column: str, where: str) -> int:
    text = (row.get(column) or "").strip()
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{where}: {column} must be a whole number, not {text!r}") from None
    if value < 0:
        raise ConfigError(f"{where}: {column} must not be negative, got {value}")
    return value


def read_trace(path: str | Path, time_scale: float = 1.0) -> list[Arrival]:
    """Arrivals of an Azure LLM-inference trace CSV, relative to its earliest timestamp.

    Args:
        path: The CSV file.
        time_scale: Time is compressed by this factor (60: an hour replays in a minute).

    Raises:
        ConfigError: ``FILE: what`` or ``FILE:LINE: what`` for an unreadable file, missing
            columns, a bad cell, or no requests.
        ValueError: ``time_scale`` is not positive.
    """
    if not time_scale > 0:
        raise ValueError("time_scale must be positive")
    path = Path(path)
    rows: list[tuple[float, int, int]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in TRACE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(
                    f"{path}:1: missing column(s) {', '.join(missing)} "
                    f"(a trace needs {','.join(TRACE_COLUMNS)})"
                )
            kinds: set[bool] = set()
            for row in reader:
                where = f"{path}:{reader.line_num}"
                stamp = (row.get("TIMESTAMP") or "").strip()
                try:
                    time_s, is_datetime = _parse_time_s(stamp)
                except ValueError:
                    raise ConfigError(
                        f"{where}: TIMESTAMP {stamp!r} is neither a date-time nor seconds"
                    ) from None
                if not math.isfinite(time_s):
                    raise ConfigError(f"{where}: TIMESTAMP {stamp!r} is not finite")
                kinds.add(is_datetime)
                if len(kinds) > 1:
                    raise ConfigError(f"{where}: TIMESTAMP mixes date-times and seconds")
                context = _count(row, "ContextTokens", where)
                if context == 0:
                    raise ConfigError(f"{where}: ContextTokens must be at least 1")
                rows.append((time_s, context, _count(row, "GeneratedTokens", where)))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read trace: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: not a CSV trace: {exc}") from None
    if not rows:
        raise ConfigError(f"{path}: the trace has no requests")
    rows.sort()
    return [Arrival((t - rows[0][0]) / time_scale, c, g) for t, c, g in rows]


def periodic_burst_arrivals(
    rate_per_s: float,
    duration_s: float,
    prompt_tokens: int,
    max_tokens: int,
    burst_factor: float,
    burst_s: float,
    period_s: float,
    seed: int = 0,
) -> list[Arrival]:
    """Poisson arrivals at ``rate_per_s``, times ``burst_factor`` during the first
    ``burst_s`` seconds of every ``period_s`` (a job spec's ``bursty`` load, as the
    simulator plays it)."""
    rng = random.Random(seed)
    arrivals: list[Arrival] = []
    start_s = 0.0
    while start_s < duration_s:
        phases = ((rate_per_s * burst_factor, burst_s), (rate_per_s, period_s - burst_s))
        for rate, length_s in phases:
            end_s = min(duration_s, start_s + length_s)
            t = start_s + rng.expovariate(rate)
            while t < end_s:
                arrivals.append(Arrival(t, prompt_tokens, max_tokens))
                t += rng.expovariate(rate)
            start_s = end_s
    return arrivals


def job_arrivals(infer: InferSection, seed: int = 0) -> list[Arrival]:
    """The arrivals of a job spec's ``infer.load`` (a trace is time-scaled and cut at the
    load's ``duration_s``).

    Raises:
        ConfigError: The trace file is bad (see :func:`read_trace`).
    """
    load = infer.load
    if load.process == "trace":
        assert load.trace_file is not None  # the job spec guarantees it
        trace = read_trace(load.trace_file, load.time_scale)
        return [a for a in trace if a.time_s < load.duration_s]
    if load.process == "bursty":
        return periodic_burst_arrivals(
            load.rate_per_s,
            load.duration_s,
            infer.prompt_tokens,
            infer.max_new_tokens,
            load.burst_factor,
            load.burst_s,
            load.period_s,
            seed,
        )
    return poisson_arrivals(
        load.rate_per_s, load.duration_s, infer.prompt_tokens, infer.max_new_tokens, seed
    )
