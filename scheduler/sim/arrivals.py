"""Modelled request arrivals: the job spec's ``infer.load`` (a Poisson process, a periodic
burst, or a trace file of requests with their prompt and output lengths). Each request is
served by a replica (:mod:`scheduler.sim.replica`)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from greenllm.errors import ConfigError
from greenllm.jobspec import LoadSection
from greenllm.serving.arrivals import TRACE_COLUMNS, fit_tokens, read_trace
from scheduler.sim.replica import Request


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
        context_tokens: The served model's context (prompt plus output), tokens: requests
            are shrunk to fit it as the live cluster's load client shrinks them (None: as
            asked).
    """

    def __init__(
        self,
        load: LoadSection,
        prompt_tokens: int,
        output_tokens: int,
        base_dir: Path,
        rng: np.random.Generator,
        start_s: float = 0.0,
        context_tokens: int | None = None,
    ) -> None:
        self.load = load
        self.context_tokens = context_tokens
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

    def take(self, t0_s: float, t1_s: float) -> list[Request]:
        """The requests arriving in ``[t0_s, t1_s)``, in order (fitted to the context)."""
        requests = self._take(t0_s, t1_s)
        if self.context_tokens is None:
            return requests
        fitted = []
        for r in requests:
            prompt, out = fit_tokens(
                int(r.prompt_tokens), int(r.output_tokens), self.context_tokens
            )
            fitted.append(Request(r.arrive_s, float(prompt), float(out)))
        return fitted

    def _take(self, t0_s: float, t1_s: float) -> list[Request]:
        t0_s, t1_s = max(t0_s, self.start_s), min(t1_s, self.end_s)
        if t1_s <= t0_s:
            return []
        if self._trace is not None:
            times, prompts, outputs = self._trace
            end = int(np.searchsorted(times, t1_s - self.start_s, side="left"))
            sl = slice(self._cursor, end)
            self._cursor = end
            return [
                Request(self.start_s + float(t), float(p), float(o))
                for t, p, o in zip(times[sl], prompts[sl], outputs[sl], strict=True)
            ]
        n = int(self._rng.poisson(self.rate_per_s(t0_s) * (t1_s - t0_s)))
        times = np.sort(self._rng.uniform(t0_s, t1_s, n))
        return [
            Request(float(t), float(self.prompt_tokens), float(self.output_tokens)) for t in times
        ]

    def ended(self, t_s: float) -> bool:
        """No request arrives after ``t_s``."""
        return t_s >= self.end_s
