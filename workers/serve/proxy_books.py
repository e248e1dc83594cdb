"""Energy books for an engine greenllm does not run itself (vLLM), kept by its proxy.

The proxy in front of the engine sees each request arrive, its prompt tokens, and its
output tokens as they stream, with their times. At every booking point (each telemetry
interval, and each request's end) the GPU energy since the previous point is split among
the requests in flight by the work each got in between: its prompt tokens when its first
token came (the prefill), and the output tokens it received (decode), each weighted by the
GPU time a token of that kind takes (:class:`WorkCosts`: the inverse of the prefill and
decode rates). Requests in flight that got no visible work share equally when none did
(a long prefill spanning intervals); energy read with no request in flight is idle. The
split itself is :class:`workers.serve.request_energy.RequestEnergySplit`'s, the same as
greenllm's own engine, so

    sum(request energies) + idle energy == metered energy

holds to rounding.

The books also give what the controller plans with, as greenllm's engine does: TTFT and
TPOT percentiles, requests waiting for their first token, prefill and decode tokens, and
the time some request was in flight (the engine's activity).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from greenllm.devices import physics
from greenllm.devices.catalog import get_spec
from greenllm.errors import GreenllmError
from greenllm.serving.report import percentile
from greenllm.serving.slo import RecentLatencies
from workers.serve.request_energy import EnergyTotals, RequestEnergySplit

#: Finished requests kept for the percentiles (the most recent ones).
LATENCY_WINDOW = 4096


@dataclass(frozen=True)
class WorkCosts:
    """GPU time per token of each kind, seconds (only their ratio splits energy).

    Attributes:
        prefill_s_per_token: A prompt token (1 / prefill rate).
        decode_s_per_token: An output token (1 / decode rate at the serving batch).
    """

    prefill_s_per_token: float
    decode_s_per_token: float

    @classmethod
    def for_gpu(cls, gpu_type: str, model_params: float, batch: int) -> WorkCosts:
        """Costs from the power model's prefill and decode rates of ``gpu_type`` serving a
        model of ``model_params`` parameters at batch ``batch``; equal costs for a GPU
        type the catalog does not know."""
        try:
            spec = get_spec(gpu_type)
        except GreenllmError:
            return cls(1.0, 1.0)
        prefill = physics.Workload("prefill", batch=batch, model_params=model_params)
        decode = physics.Workload("decode", batch=batch, model_params=model_params)
        return cls(
            1.0 / physics.peak_throughput(spec, prefill),
            1.0 / physics.peak_throughput(spec, decode),
        )

    def work_s(self, prefill_tokens: float, decode_tokens: float) -> float:
        """GPU time of that much work, seconds."""
        return prefill_tokens * self.prefill_s_per_token + decode_tokens * self.decode_s_per_token


@dataclass
class _Flight:
    """One request in flight."""

    arrived_s: float
    prompt_tokens: int = 0
    prefilled: bool = False
    output_tokens: int = 0
    first_token_s: float | None = None
    last_token_s: float | None = None
    energy_j: float = 0.0
    # work seen since the last booking point
    pending_prefill: int = 0
    pending_decode: int = 0


@dataclass(frozen=True)
class Finished:
    """How one request ended, as the books saw it.

    Attributes:
        energy_j: Its share of the GPU's energy, joules.
        prompt_tokens: Its prompt, tokens.
        output_tokens: Tokens it got.
        ttft_s: Arrival to first token, seconds (None: none came).
        tpot_s: Mean time per output token after the first, seconds (None below 2).
    """

    energy_j: float
    prompt_tokens: int
    output_tokens: int
    ttft_s: float | None
    tpot_s: float | None


@dataclass(frozen=True)
class BooksSnapshot:
    """The books now.

    Attributes:
        energy: Metered, attributed and idle energy, joules.
        in_flight: Requests in flight.
        waiting: Of them, still waiting for their first token (queued or prefilling).
        requests: Requests finished (any outcome).
        failed: Of them, answered with an error.
        prefill_tokens: Prompt tokens prefilled, tokens.
        decode_tokens: Output tokens generated, tokens.
        offered_tokens: Output tokens asked for by the requests that arrived (max_tokens,
            or what they got when they gave none), tokens.
        outstanding_tokens: Output tokens still asked for by the requests in flight.
        waiting_tokens: Output tokens asked for by the requests still waiting for their
            first token (what the controller's demand drains), tokens.
        offered_prompt_tokens: Prompt tokens of the requests whose prompt the engine
            counted (at their first token), tokens.
        oldest_wait_s: How long the oldest request without its first token has waited, s.
        recent_ttft_p99_s, recent_tpot_p99_s: p99 over the last
            :data:`~greenllm.serving.slo.LATENCY_WINDOW_S` (what SLO feedback reads), s.
        active_s: Time some request was in flight, seconds.
        work_s: GPU time of the work done at the costs used, seconds.
        ttft_p50_s, ttft_p99_s, tpot_p50_s, tpot_p99_s: Recent percentiles, seconds.
    """

    energy: EnergyTotals
    in_flight: int
    waiting: int
    requests: int
    failed: int
    prefill_tokens: int
    decode_tokens: int
    offered_tokens: int
    outstanding_tokens: int
    waiting_tokens: int
    offered_prompt_tokens: int
    oldest_wait_s: float
    recent_ttft_p99_s: float
    recent_tpot_p99_s: float
    active_s: float
    work_s: float
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    tpot_p50_s: float | None
    tpot_p99_s: float | None


@dataclass
class _Counts:
    requests: int = 0
    failed: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    offered_tokens: int = 0
    offered_prompt_tokens: int = 0
    active_s: float = 0.0
    work_s: float = 0.0
    ttft_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    tpot_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    recent: RecentLatencies = field(default_factory=RecentLatencies)


class ProxyBooks:
    """Per-request energy from what a proxy sees (thread-safe; see module doc).

    Args:
        read_energy_j: The GPU's monotonic energy counter, joules.
        costs: GPU time per prefill and decode token.
        clock: Returns the time, seconds.
    """

    def __init__(
        self,
        read_energy_j: Callable[[], float],
        costs: WorkCosts,
        clock: Callable[[], float],
    ) -> None:
        self.ledger = RequestEnergySplit(read_energy_j)
        self.costs = costs
        self._clock = clock
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight] = {}
        self._max_tokens: dict[Hashable, int] = {}
        self._counts = _Counts()
        self._active_since_s: float | None = None

    # -- what the proxy sees -------------------------------------------------------------
    def begin(self, key: Hashable, max_tokens: int | None = None) -> None:
        """A request arrived (``max_tokens``: output tokens it asks for at most)."""
        now_s = self._clock()
        with self._lock:
            if not self._flights:
                self._book_locked()  # what came before it was idle
                self._active_since_s = now_s
            self._flights[key] = _Flight(arrived_s=now_s)
            if max_tokens:
                self._max_tokens[key] = int(max_tokens)
                self._counts.offered_tokens += int(max_tokens)

    def tokens(self, key: Hashable, output_tokens: int, prompt_tokens: int | None = None) -> None:
        """The request has received ``output_tokens`` in all (cumulative; the engine's
        count when it gives one); ``prompt_tokens`` once known. The first output token
        marks its prefill as done."""
        now_s = self._clock()
        with self._lock:
            f = self._flights.get(key)
            if f is None:
                return
            if prompt_tokens is not None and prompt_tokens > f.prompt_tokens:
                self._counts.offered_prompt_tokens += int(prompt_tokens) - f.prompt_tokens
                f.prompt_tokens = int(prompt_tokens)
            new = max(0, int(output_tokens) - f.output_tokens)
            if new == 0:
                return
            if not f.prefilled:
                f.prefilled = True
                f.pending_prefill += f.prompt_tokens
                f.first_token_s = now_s
            f.output_tokens += new
            f.pending_decode += new
            f.last_token_s = now_s

    def finish(
        self,
        key: Hashable,
        prompt_tokens: int | None = None,
        output_tokens: int | None = None,
        failed: bool = False,
    ) -> Finished:
        """The request ended; the engine's final counts (its ``usage``) settle the work not
        seen yet. Books the energy up to now, returns the request's figures."""
        with self._lock:
            f = self._flights.get(key)
            if f is None:
                return Finished(0.0, 0, 0, None, None)
            if prompt_tokens is not None and prompt_tokens > f.prompt_tokens:
                if f.prefilled:
                    f.pending_prefill += int(prompt_tokens) - f.prompt_tokens
                self._counts.offered_prompt_tokens += int(prompt_tokens) - f.prompt_tokens
                f.prompt_tokens = int(prompt_tokens)
        if output_tokens is not None:
            self.tokens(key, output_tokens)
        now_s = self._clock()
        with self._lock:
            f = self._flights[key]
            if not f.prefilled and f.prompt_tokens and not failed:
                f.prefilled = True  # answered with no output token: its prompt was still read
                f.pending_prefill += f.prompt_tokens
            self._book_locked()
            del self._flights[key]
            asked = self._max_tokens.pop(key, None)
            if asked is None:  # no max_tokens given: it asked for what it got
                self._counts.offered_tokens += f.output_tokens
            c = self._counts
            c.requests += 1
            c.failed += int(failed)
            ttft_s = f.first_token_s - f.arrived_s if f.first_token_s is not None else None
            tpot_s = None
            if f.output_tokens >= 2 and f.first_token_s is not None and f.last_token_s:
                tpot_s = (f.last_token_s - f.first_token_s) / (f.output_tokens - 1)
            if not failed:
                if ttft_s is not None:
                    c.ttft_s.append(ttft_s)
                if tpot_s is not None:
                    c.tpot_s.append(tpot_s)
                c.recent.add(now_s, ttft_s, tpot_s)
            if not self._flights and self._active_since_s is not None:
                c.active_s += now_s - self._active_since_s
                self._active_since_s = None
            return Finished(f.energy_j, f.prompt_tokens, f.output_tokens, ttft_s, tpot_s)

    # -- booking --------------------------------------------------------------------------
    def book(self) -> None:
        """A booking point (each telemetry interval): the energy since the previous one
        goes to the requests in flight by their work in between, or to idle."""
        with self._lock:
            self._book_locked()

    def _book_locked(self) -> None:
        work: dict[Hashable, float] = {}
        for key, f in self._flights.items():
            work[key] = self.costs.work_s(f.pending_prefill, f.pending_decode)
            self._counts.prefill_tokens += f.pending_prefill
            self._counts.decode_tokens += f.pending_decode
            self._counts.work_s += work[key]
            f.pending_prefill = f.pending_decode = 0
        for key, joules in self.ledger.step(work).items():
            self._flights[key].energy_j += joules

    def snapshot(self) -> BooksSnapshot:
        """The books up to now (booked first)."""
        now_s = self._clock()
        with self._lock:
            self._book_locked()
            c = self._counts
            active_s = c.active_s
            if self._active_since_s is not None:
                active_s += now_s - self._active_since_s
            outstanding = sum(
                max(0, self._max_tokens.get(k, f.output_tokens) - f.output_tokens)
                for k, f in self._flights.items()
            )
            waiting = [(k, f) for k, f in self._flights.items() if not f.prefilled]
            recent_ttft_s, recent_tpot_s = c.recent.p99(now_s)
            return BooksSnapshot(
                energy=self.ledger.totals(),
                in_flight=len(self._flights),
                waiting=sum(1 for f in self._flights.values() if not f.prefilled),
                requests=c.requests,
                failed=c.failed,
                prefill_tokens=c.prefill_tokens,
                decode_tokens=c.decode_tokens,
                offered_tokens=c.offered_tokens,
                outstanding_tokens=outstanding,
                waiting_tokens=sum(self._max_tokens.get(k, 0) for k, _ in waiting),
                offered_prompt_tokens=c.offered_prompt_tokens,
                oldest_wait_s=max((now_s - f.arrived_s for _, f in waiting), default=0.0),
                recent_ttft_p99_s=recent_ttft_s,
                recent_tpot_p99_s=recent_tpot_s,
                active_s=active_s,
                work_s=c.work_s,
                ttft_p50_s=percentile(list(c.ttft_s), 50),
                ttft_p99_s=percentile(list(c.ttft_s), 99),
                tpot_p50_s=percentile(list(c.tpot_s), 50),
                tpot_p99_s=percentile(list(c.tpot_s), 99),
            )

    def energy_of(self, key: Hashable) -> float:
        """Energy booked to a request in flight so far, joules (0: unknown)."""
        with self._lock:
            f = self._flights.get(key)
            return f.energy_j if f is not None else 0.0
