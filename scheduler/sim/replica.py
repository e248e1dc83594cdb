"""An inference replica, request by request: continuous batching on one simulated GPU.

Requests wait in the replica's queue; whenever the running batch has room (at most the job's
``batch_size`` sequences), the oldest waiting request is prefilled (compute-bound, its prompt
at the prefill rate) and joins the batch with its first token. The batch then decodes one
token per sequence per iteration; an iteration of ``b`` sequences takes ``b / rate(b)``,
where ``rate(b)`` is the decode throughput of a batch of ``b`` at the GPU's current limit and
clocks (memory-bound: a nearly empty batch costs almost as much time, and power, as a full
one). A sequence leaves the batch with its last token. Each request's time to first token
(TTFT) and time per output token (TPOT) are recorded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from greenllm.devices.physics import Workload

#: Smallest stretch of time worth simulating, seconds.
EPS_S = 1e-9


@dataclass
class Request:
    """One request.

    Attributes:
        arrive_s: When it arrived, seconds.
        prompt_tokens: Prompt length, tokens.
        output_tokens: Tokens to generate.
        prefill_left: Prompt tokens not yet prefilled.
        decoded: Output tokens produced so far (fractional within an iteration).
        first_token_s: When its first token came (None: not yet).
    """

    arrive_s: float
    prompt_tokens: float
    output_tokens: float
    prefill_left: float = -1.0
    decoded: float = 0.0
    first_token_s: float | None = None

    def __post_init__(self) -> None:
        if self.prefill_left < 0:
            self.prefill_left = self.prompt_tokens


@dataclass
class Finished:
    """What a finished request measured: TTFT and TPOT, seconds."""

    ttft_s: float
    tpot_s: float
    tokens: float


@dataclass
class ReplicaModel:
    """One replica's queue and running batch.

    Attributes:
        max_batch: Most sequences decoded together.
        waiting: Requests not yet prefilled (or part-way through their prefill).
        running: Requests in the decode batch.
        offered_units: Output tokens of the requests routed here.
        done: Requests finished since the owner last took them.
    """

    max_batch: int
    waiting: deque[Request] = field(default_factory=deque)
    running: list[Request] = field(default_factory=list)
    offered_units: float = 0.0
    done: list[Finished] = field(default_factory=list)

    def add(self, request: Request) -> None:
        """A request routed here."""
        self.waiting.append(request)
        self.offered_units += request.output_tokens

    def backlog_output_tokens(self) -> float:
        """Output tokens still to produce here."""
        return sum(r.output_tokens for r in self.waiting) + sum(
            r.output_tokens - r.decoded for r in self.running
        )

    @property
    def in_flight(self) -> int:
        """Requests queued or being generated here."""
        return len(self.waiting) + len(self.running)

    @property
    def empty(self) -> bool:
        """Nothing waits or runs here."""
        return not self.waiting and not self.running

    def take_all(self) -> list[Request]:
        """Everything waiting or running (a stopped replica hands its requests back)."""
        out = [*self.running, *self.waiting]
        self.running, self.waiting = [], deque()
        return out

    def serve(
        self,
        t0_s: float,
        dt_s: float,
        prefill_rate: Callable[[], float],
        decode_rate: Callable[[int], float],
        prefill: Workload,
        decode: Callable[[int], Workload],
    ) -> tuple[list[tuple[Workload | None, float]], float]:
        """Run the replica from ``t0_s`` for ``dt_s``.

        Args:
            t0_s: Start, seconds.
            dt_s: Length, seconds.
            prefill_rate: Prompt tokens per second now.
            decode_rate: Output tokens per second of a batch of ``b`` now.
            prefill: The prefill workload (for the GPU's power).
            decode: The decode workload of a batch of ``b``.

        Returns:
            What the GPU ran, in order (workload, seconds; None: idle), and the output
            tokens generated (the unit of an inference job, as the live cluster counts it).
        """
        t, end = t0_s, t0_s + dt_s
        segments: list[tuple[Workload | None, float]] = []
        tokens = 0.0
        while end - t > EPS_S:
            if self.waiting and len(self.running) < self.max_batch:
                req = self.waiting[0]
                rate = prefill_rate()
                need_s = req.prefill_left / rate if rate > 0 else float("inf")
                spent = min(need_s, end - t)
                segments.append((prefill, spent))
                req.prefill_left -= spent * rate
                t += spent
                if req.prefill_left <= 1e-6:
                    self.waiting.popleft()
                    req.prefill_left = 0.0
                    req.first_token_s = t
                    req.decoded = 1.0
                    tokens += 1.0
                    self._admit(req)
                continue
            if not self.running:
                segments.append((None, end - t))
                break
            b = len(self.running)
            per_seq = decode_rate(b) / b  # tokens per second of each sequence
            left = min(r.output_tokens - r.decoded for r in self.running)
            spent = min(end - t, left / per_seq) if per_seq > 0 else end - t
            segments.append((decode(b), spent))
            for r in self.running:
                r.decoded += spent * per_seq
            tokens += spent * per_seq * b
            t += spent
            self._finish(t)
        return segments, tokens

    def _admit(self, req: Request) -> None:
        if req.decoded >= req.output_tokens - 1e-6:
            self._record(req, req.first_token_s or 0.0)
        else:
            self.running.append(req)

    def _finish(self, now_s: float) -> None:
        still = []
        for r in self.running:
            if r.decoded >= r.output_tokens - 1e-6:
                self._record(r, now_s)
            else:
                still.append(r)
        self.running = still

    def _record(self, r: Request, now_s: float) -> None:
        first = r.first_token_s if r.first_token_s is not None else now_s
        tpot = (now_s - first) / max(1.0, r.output_tokens - 1.0)
        self.done.append(Finished(first - r.arrive_s, tpot, r.output_tokens))
