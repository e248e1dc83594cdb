"""Request loads for inference replicas: Poisson, bursty, or an Azure LLM-inference trace.

Every generator returns a list of :class:`Arrival` (time from the start of the load,
prompt and output token counts); :func:`play` submits them in real time.

Bursty load is an on/off modulated Poisson process: ON and OFF periods of exponential
length alternate (means ``duty * cycle_s`` and ``(1 - duty) * cycle_s``); during ON
periods requests arrive at ``rate_per_s / duty``, during OFF none do, so the mean rate is
still ``rate_per_s`` but arrivals come in bursts.

A trace file is CSV in the format of the Azure LLM-inference traces (2023/2024): a header
with at least ``TIMESTAMP,ContextTokens,GeneratedTokens``, one request per row; timestamps
are ISO date-times (``2023-11-16 18:15:46.6805900``) or plain seconds, and arrivals are
made relative to the earliest.
"""

from __future__ import annotations

import csv
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from greenllm.errors import ConfigError
from greenllm.jobspec import InferSection

#: Share of time a bursty load is ON.
BURST_DUTY = 0.25
#: Mean length of one ON + OFF cycle of a bursty load, seconds.
BURST_CYCLE_S = 8.0
#: Columns a trace file must have (Azure LLM-inference trace format).
TRACE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
#: A small trace in that format shipped for examples and tests (40 requests in ~16 s).
SAMPLE_TRACE = Path(__file__).parent / "data" / "sample_trace.csv"


@dataclass(frozen=True)
class Arrival:
    """One request of a load.

    Attributes:
        time_s: When it arrives, seconds from the start of the load.
        prompt_tokens: Prompt length, tokens.
        max_new_tokens: Tokens to generate.
    """

    time_s: float
    prompt_tokens: int
    max_new_tokens: int


def poisson_arrivals(
    rate_per_s: float, duration_s: float, prompt_tokens: int, max_new_tokens: int, seed: int = 0
) -> list[Arrival]:
    """Poisson arrivals at ``rate_per_s`` requests/s during ``duration_s`` seconds."""
    rng = random.Random(seed)
    arrivals: list[Arrival] = []
    t = rng.expovariate(rate_per_s)
    while t < duration_s:
        arrivals.append(Arrival(t, prompt_tokens, max_new_tokens))
        t += rng.expovariate(rate_per_s)
    return arrivals


def bursty_arrivals(
    rate_per_s: float,
    duration_s: float,
    prompt_tokens: int,
    max_new_tokens: int,
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
                arrivals.append(Arrival(t, prompt_tokens, max_new_tokens))
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


def read_trace(path: str | Path) -> list[Arrival]:
    """Arrivals of an Azure LLM-inference trace CSV, relative to its earliest timestamp.

    Raises:
        ConfigError: ``FILE: what`` or ``FILE:LINE: what`` for an unreadable file, missing
            columns, a bad cell, or no requests.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in TRACE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(
                    f"{path}:1: missing column(s) {', '.join(missing)} "
                    f"(a trace needs {','.join(TRACE_COLUMNS)})"
                )
            rows: list[tuple[float, int, int]] = []
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
    return [Arrival(t - rows[0][0], c, g) for t, c, g in rows]


def arrivals_for(infer: InferSection, seed: int = 0) -> list[Arrival]:
    """The arrivals of a job's load (a trace is cut at the load's ``duration_s``).

    Raises:
        ConfigError: The trace file is bad (see :func:`read_trace`).
    """
    load = infer.load
    if load.process == "trace":
        assert load.trace_file is not None  # the job spec guarantees it
        return [a for a in read_trace(load.trace_file) if a.time_s < load.duration_s]
    make = poisson_arrivals if load.process == "poisson" else bursty_arrivals
    return make(load.rate_per_s, load.duration_s, infer.prompt_tokens, infer.max_new_tokens, seed)


def fit_to_context(arrival: Arrival, context_tokens: int) -> Arrival:
    """``arrival`` shrunk to fit a model context of ``context_tokens`` (prompt first).

    The prompt is cut to leave room for the output, keeping at least one token; the output
    is then cut to what still fits.
    """
    out = min(arrival.max_new_tokens, context_tokens - 1)
    prompt = max(1, min(arrival.prompt_tokens, context_tokens - out))
    return replace(arrival, prompt_tokens=prompt, max_new_tokens=min(out, context_tokens - prompt))


class PromptSource:
    """Prompts of any length, cut from a token stream at seeded random offsets.

    Args:
        ids: Token ids to cut prompts from (e.g. the held-out corpus).
        seed: Seed of the offsets.
    """

    def __init__(self, ids: Sequence[int], seed: int = 0) -> None:
        if not ids:
            raise ValueError("need at least one token to cut prompts from")
        self._ids = list(ids)
        self._rng = random.Random(seed)

    def take(self, tokens: int) -> list[int]:
        """A prompt of ``tokens`` ids (the stream wraps around when it is shorter)."""
        start = self._rng.randrange(len(self._ids))
        reps = (start + tokens) // len(self._ids) + 1
        return (self._ids * reps)[start : start + tokens]


def play(
    arrivals: Sequence[Arrival],
    submit: Callable[[Arrival], object],
    stop_event: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] | None = None,
) -> int:
    """Submit each arrival at its time (relative to now) until done or stopped.

    Returns:
        How many arrivals were submitted.
    """
    stop = stop_event or threading.Event()
    wait = sleep or stop.wait
    start_s = clock()
    submitted = 0
    for arrival in arrivals:
        while not stop.is_set() and (due_s := start_s + arrival.time_s - clock()) > 0:
            wait(due_s)
        if stop.is_set():
            break
        submit(arrival)
        submitted += 1
    return submitted
