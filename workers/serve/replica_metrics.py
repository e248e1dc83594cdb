"""Request-level figures of a replica: counts, TTFT / TPOT / latency percentiles, rates,
energy. :class:`MetricsRecorder` collects them (thread-safe); :meth:`snapshot` gives a
:class:`ReplicaMetrics`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from greenllm.serving.report import percentile
from greenllm.serving.slo import RecentLatencies
from workers.serve.request_energy import EnergyTotals
from workers.serve.stream import RequestResult

#: Finished requests kept for the percentiles (the most recent ones).
LATENCY_WINDOW = 4096
#: Rates are measured over this many most recent seconds, so they follow power changes.
RATE_WINDOW_S = 10.0


@dataclass(frozen=True)
class ReplicaMetrics:
    """A replica's figures.

    Attributes:
        name: Replica name.
        model_id: Model it serves.
        running: Whether it still serves.
        queued: Requests waiting for a batch slot.
        in_batch: Requests in the running batch.
        max_queue: Most requests that may wait.
        max_batch: Most requests decoded together.
        completed: Requests finished normally (``stop`` or ``length``).
        failed: Requests answered with an error.
        cancelled: Requests the client abandoned.
        rejected: Submissions refused (queue full, stopped, bad input).
        prompt_tokens: Prompt tokens prefilled.
        completion_tokens: Tokens generated.
        tokens_per_s: Tokens generated per wall second over the last
            :data:`RATE_WINDOW_S` (or since the first step, if later), tokens/s.
        busy_tokens_per_s: Tokens generated per second spent in steps over the same window:
            the replica's capacity at its current power limit and clocks (what load weights
            follow), tokens/s; 0 before any step.
        ttft_p50_s: Median time to first token, seconds (None: no request finished yet).
        ttft_p99_s: 99th percentile time to first token, seconds.
        tpot_p50_s: Median time per output token after the first, seconds.
        tpot_p99_s: 99th percentile time per output token, seconds.
        latency_p50_s: Median submission-to-finish time, seconds.
        latency_p99_s: 99th percentile submission-to-finish time, seconds.
        energy_j: Metered GPU energy since the replica started, joules.
        idle_energy_j: Of it, while no request was in flight, joules.
        request_energy_j: Of it, split among requests (in flight included), joules.
        finished_request_energy_j: Sum of the energy of finished requests, joules.
        j_per_token: Request energy per generated token, J/token (None before any).
    """

    name: str
    model_id: str
    running: bool
    queued: int
    in_batch: int
    max_queue: int
    max_batch: int
    completed: int
    failed: int
    cancelled: int
    rejected: int
    prompt_tokens: int
    completion_tokens: int
    tokens_per_s: float
    busy_tokens_per_s: float
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    tpot_p50_s: float | None
    tpot_p99_s: float | None
    latency_p50_s: float | None
    latency_p99_s: float | None
    energy_j: float
    idle_energy_j: float
    request_energy_j: float
    finished_request_energy_j: float
    j_per_token: float | None

    def to_dict(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict."""
        return asdict(self)


class MetricsRecorder:
    """Collects a replica's counts, step rates and finished requests (thread-safe).

    Args:
        clock: Returns the time, seconds.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ttft_s: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._tpot_s: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._latency_s: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._recent = RecentLatencies()
        # (end time, tokens generated, seconds) of each step within the rate window.
        self._steps: deque[tuple[float, int, float]] = deque()
        self._first_step_s: float | None = None
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0, "rejected": 0}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finished_energy_j = 0.0

    def rejected(self) -> None:
        """Count a refused submission."""
        with self._lock:
            self.counts["rejected"] += 1

    def step(self, generated_tokens: int, prompt_tokens: int, step_s: float) -> None:
        """Record one batched step that ended now."""
        now_s = self._clock()
        with self._lock:
            if self._first_step_s is None:
                self._first_step_s = now_s - step_s
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += generated_tokens
            self._steps.append((now_s, generated_tokens, step_s))
            self._prune(now_s)

    def finished(self, result: RequestResult) -> None:
        """Record a finished request."""
        with self._lock:
            self.finished_energy_j += result.energy_j
            if result.error is not None:
                self.counts["failed"] += 1
                return
            if result.finish_reason == "cancelled":
                self.counts["cancelled"] += 1
                return
            self.counts["completed"] += 1
            self._latency_s.append(result.latency_s)
            if result.ttft_s is not None:
                self._ttft_s.append(result.ttft_s)
            if result.tpot_s is not None:
                self._tpot_s.append(result.tpot_s)
            self._recent.add(self._clock(), result.ttft_s, result.tpot_s)

    def recent_p99(self) -> tuple[float, float]:
        """p99 TTFT and TPOT of the requests finished in the last
        :data:`~greenllm.serving.slo.LATENCY_WINDOW_S` (what the controller's SLO feedback
        reads), seconds; 0 where none finished."""
        with self._lock:
            return self._recent.p99(self._clock())

    def mean_latency_s(self) -> float | None:
        """Mean latency of the recent finished requests, seconds (None: none yet)."""
        with self._lock:
            return sum(self._latency_s) / len(self._latency_s) if self._latency_s else None

    def _prune(self, now_s: float) -> None:
        while self._steps and self._steps[0][0] < now_s - RATE_WINDOW_S:
            self._steps.popleft()

    def snapshot(self, energy: EnergyTotals, **state: Any) -> ReplicaMetrics:
        """The figures now; ``state`` gives name, model_id, running, queued, in_batch,
        max_queue and max_batch."""
        now_s = self._clock()
        with self._lock:
            self._prune(now_s)
            tokens = sum(s[1] for s in self._steps)
            busy_s = sum(s[2] for s in self._steps)
            first_s = self._first_step_s
            span_s = min(RATE_WINDOW_S, now_s - first_s) if first_s is not None else 0.0
            ttft, tpot, lat = list(self._ttft_s), list(self._tpot_s), list(self._latency_s)
            fields: dict[str, Any] = {**state, **self.counts}
            return ReplicaMetrics(
                **fields,
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                tokens_per_s=tokens / span_s if span_s > 0 else 0.0,
                busy_tokens_per_s=tokens / busy_s if busy_s > 0 else 0.0,
                ttft_p50_s=percentile(ttft, 50),
                ttft_p99_s=percentile(ttft, 99),
                tpot_p50_s=percentile(tpot, 50),
                tpot_p99_s=percentile(tpot, 99),
                latency_p50_s=percentile(lat, 50),
                latency_p99_s=percentile(lat, 99),
                energy_j=energy.metered_j,
                idle_energy_j=energy.idle_j,
                request_energy_j=energy.attributed_j,
                finished_request_energy_j=self.finished_energy_j,
                j_per_token=(
                    energy.attributed_j / self.completion_tokens if self.completion_tokens else None
                ),
            )
