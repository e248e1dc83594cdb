"""Modelled request arrivals and inference replica queues.

Inference requests (prompt and output tokens) arrive by the job spec's ``infer.load``: a
Poisson process, a periodic burst, or a trace file; routed to replicas by the controller's
load weights, each replica spends each step first on prefill (compute-bound), then on
decode of the requests whose prefill is done (memory-bound), batching ``batch_size``
sequences; the rest of the step it idles.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from greenllm.errors import ConfigError
from greenllm.jobspec import LoadSection
from greenllm.serving.arrivals import TRACE_COLUMNS, read_trace


def load_request_trace(
    path: Path, time_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrival times (s, from the first), prompt and output tokens of a request trace: the
    Azure LLM-inference format (TIMESTAMP, ContextTokens, GeneratedTokens) or
    ``t_s,prompt_tokens,output_tokens``; times are divided by ``time_scale``.

    Raises:
        ConfigError: The file is missing or malformed; the message names file and line.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    if all(c in header for c in TRACE_COLUMNS):
        arrivals = read_trace(path, time_scale)
        return (
            np.array([a.time_s for a in arrivals]),
            np.array([a.prompt_tokens for a in arrivals], dtype=float),
            np.array([a.max_tokens for a in arrivals], dtype=float),
        )
    rows = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        want = {"t_s", "prompt_tokens", "output_tokens"}
        if reader.fieldnames is None or not want <= set(reader.fieldnames):
            raise ConfigError(
                f"{path}: header must be {','.join(TRACE_COLUMNS)} "
                "or t_s,prompt_tokens,output_tokens"
            )
        for line, row in enumerate(reader, start=2):
            try:
                rows.append(
                    (
                        float(row["t_s"]) / time_scale,
                        float(row["prompt_tokens"]),
                        float(row["output_tokens"]),
                    )
                )
            except (TypeError, ValueError):
                raise ConfigError(f"{path}:{line}: expected three numbers") from None
    arr = np.asarray(sorted(rows), dtype=float).reshape(-1, 3)
    return arr[:, 0], arr[:, 1], arr[:, 2]


class ArrivalStream:
    """Requests arriving for one inference job, from its start.

    Args:
        load: The job spec's load section.
        prompt_tokens: Prompt tokens per request (Poisson and bursty).
        output_tokens: Output tokens per request (Poisson and bursty).
        base_dir: Folder a relative trace file is taken from.
        rng: The world's random stream for this job.
        start_s: When the job starts receiving requests, seconds.
    """

    def __init__(
        self,
        load: LoadSection,
        prompt_tokens: int,
        output_tokens: int,
        base_dir: Path,
        rng: np.random.Generator,
        start_s: float = 0.0,
    ) -> None:
        self.load = load
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.start_s = start_s
        self.end_s = start_s + load.duration_s
        self._rng = rng
        self._trace: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._cursor = 0
        if load.process == "trace" and load.trace_file is not None:
            path = load.trace_file if load.trace_file.is_absolute() else base_dir / load.trace_file
            self._trace = load_request_trace(path, load.time_scale)

    def rate_per_s(self, t_s: float) -> float:
        """Mean request rate at time ``t_s`` (Poisson and bursty), requests/s."""
        a = self.load
        if a.process == "bursty" and ((t_s - self.start_s) % a.period_s) < a.burst_s:
            return a.rate_per_s * a.burst_factor
        return a.rate_per_s

    def take(self, t0_s: float, t1_s: float) -> tuple[float, float, int]:
        """Prompt tokens, output tokens and number of the requests arriving in ``[t0, t1)``."""
        t0_s, t1_s = max(t0_s, self.start_s), min(t1_s, self.end_s)
        if t1_s <= t0_s:
            return 0.0, 0.0, 0
        if self._trace is not None:
            times, prompts, outputs = self._trace
            end = int(np.searchsorted(times, t1_s - self.start_s, side="left"))
            sl = slice(self._cursor, end)
            self._cursor = end
            return float(np.sum(prompts[sl])), float(np.sum(outputs[sl])), end - sl.start
        n = int(self._rng.poisson(self.rate_per_s(t0_s) * (t1_s - t0_s)))
        return float(n * self.prompt_tokens), float(n * self.output_tokens), n

    def ended(self, t_s: float) -> bool:
        """No request arrives after ``t_s``."""
        return t_s >= self.end_s


@dataclass
class ReplicaQueue:
    """Tokens waiting at one inference replica.

    Attributes:
        prompt_tokens: Prompt tokens waiting for prefill.
        output_waiting: Output tokens of requests still waiting for prefill.
        output_ready: Output tokens of prefilled requests, waiting for decode.
    """

    prompt_tokens: float = 0.0
    output_waiting: float = 0.0
    output_ready: float = 0.0

    def add(self, prompt_tokens: float, output_tokens: float) -> None:
        """Enqueue requests."""
        self.prompt_tokens += prompt_tokens
        self.output_waiting += output_tokens

    def take_all(self, other: ReplicaQueue) -> None:
        """Move everything waiting in ``other`` here."""
        self.prompt_tokens += other.prompt_tokens
        self.output_waiting += other.output_waiting + other.output_ready
        other.prompt_tokens = other.output_waiting = other.output_ready = 0.0

    def serve(
        self, step_s: float, prefill_rate: float, decode_rate: float
    ) -> tuple[float, float, float]:
        """Spend up to ``step_s`` on prefill then decode.

        Returns:
            Seconds of prefill, seconds of decode, output tokens decoded.
        """
        prefill_s = min(step_s, self.prompt_tokens / prefill_rate) if prefill_rate > 0 else 0.0
        done = prefill_s * prefill_rate
        released = (
            self.output_waiting * min(1.0, done / self.prompt_tokens)
            if self.prompt_tokens > 0
            else 0.0
        )
        self.prompt_tokens = max(0.0, self.prompt_tokens - done)
        self.output_waiting -= released
        self.output_ready += released
        left = step_s - prefill_s
        decode_s = min(left, self.output_ready / decode_rate) if decode_rate > 0 else 0.0
        decoded = decode_s * decode_rate
        self.output_ready = max(0.0, self.output_ready - decoded)
        return prefill_s, decode_s, decoded

    @property
    def backlog_output_tokens(self) -> float:
        """Output tokens not yet decoded."""
        return self.output_waiting + self.output_ready

    @property
    def empty(self) -> bool:
        """Nothing waits here."""
        return self.prompt_tokens < 1e-6 and self.backlog_output_tokens < 1e-6
