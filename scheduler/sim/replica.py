"""An inference replica, request by request: continuous batching on one simulated GPU.

Requests wait in the replica's queue. Each engine step decodes one token of every running
sequence and prefills waiting prompts with what is left of the step's token budget
(chunked prefill, :mod:`greenllm.serving.chunking`): first come, first served, a long prompt
in chunks over several steps; a request holds a batch slot (at most ``max_batch``) from its
first chunk. A step of ``C`` prompt tokens and ``b`` running sequences takes
``C / prefill_rate + b / rate(b)`` (prefill is compute-bound; ``rate(b)`` is the decode
throughput of a batch of ``b`` at the GPU's current limit and clocks: memory-bound, so a
nearly empty batch costs almost as much time, and power, as a full one). A prompt's last
chunk gives its first token at the end of that step; a sequence leaves the batch with its
last token. Each request's time to first token (TTFT) and time per output token (TPOT) are
recorded as the engine produces them: a running sequence's TPOT includes the prefill chunks
that shared its steps. Steps that repeat unchanged are taken together (fractional steps), so
the cost is per event, not per step.
"""

from __future__ import annotations

import math
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
    """What a finished request measured: TTFT and TPOT, seconds; when it arrived."""

    ttft_s: float
    tpot_s: float
    tokens: float
    arrive_s: float = 0.0


@dataclass
class _Run:
    """Identical engine steps in progress: what each prefills, how many decode, how many
    steps are left (fractional; a step's progress is linear in its time)."""

    plan: list[tuple[Request, float]]
    decoding: int
    steps_left: float


@dataclass
class ReplicaModel:
    """One replica's queue and running batch.

    Attributes:
        max_batch: Most sequences decoded together.
        token_budget: Most tokens one step processes, decodes plus prefill chunks (None:
            unbounded, every admitted prompt prefilled in one step).
        waiting: Requests not yet prefilled (or part-way through their prefill).
        running: Requests in the decode batch.
        offered_units: Output tokens of the requests routed here.
        offered_prompt_tokens: Prompt tokens of the requests routed here.
        done: Requests finished since the owner last took them.
    """

    max_batch: int
    token_budget: int | None = None
    waiting: deque[Request] = field(default_factory=deque)
    running: list[Request] = field(default_factory=list)
    offered_units: float = 0.0
    offered_prompt_tokens: float = 0.0
    done: list[Finished] = field(default_factory=list)
    _run: _Run | None = None

    def add(self, request: Request) -> None:
        """A request routed here (it may join at the next step boundary)."""
        run = self._run
        if run is not None and run.steps_left > 1.0 + 1e-9:
            run.steps_left -= math.ceil(run.steps_left - 1e-9) - 1.0
        self.waiting.append(request)
        self.offered_units += request.output_tokens
        self.offered_prompt_tokens += request.prompt_tokens

    def waiting_output_tokens(self) -> float:
        """Output tokens of the requests waiting for their first token here (what must be
        drained; the running batch's are served at the rate already measured)."""
        return sum(r.output_tokens for r in self.waiting)

    def backlog_prompt_tokens(self) -> float:
        """Prompt tokens still to prefill here."""
        return sum(r.prefill_left for r in self.waiting)

    def oldest_wait_s(self, now_s: float) -> float:
        """How long the oldest request without its first token has waited, seconds."""
        return max(0.0, now_s - self.waiting[0].arrive_s) if self.waiting else 0.0

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
        self.running, self.waiting, self._run = [], deque(), None
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
            run = self._run or self._start_run()
            if run is None:
                segments.append((None, end - t))
                break
            b = run.decoding
            chunk = sum(n for _, n in run.plan)
            rate = prefill_rate() if chunk > 0 else 0.0
            per_seq = decode_rate(b) / b if b else 0.0  # steps per second of the batch
            if (chunk > 0 and rate <= 0) or (b and per_seq <= 0):
                segments.append((prefill if chunk > 0 else decode(b), end - t))
                break  # no progress possible at these settings
            step_s = (chunk / rate if chunk > 0 else 0.0) + (1.0 / per_seq if b else 0.0)
            steps = min(run.steps_left, (end - t) / step_s)
            if chunk > 0:
                segments.append((prefill, steps * chunk / rate))
            if b:
                segments.append((decode(b), steps / per_seq))
                for r in self.running:
                    r.decoded += steps
                tokens += steps * b
            for req, n in run.plan:
                req.prefill_left -= steps * n
            t += steps * step_s
            run.steps_left -= steps
            if run.steps_left > 1e-9:
                continue
            self._run = None
            self._finish(t)
            while self.waiting and self.waiting[0].prefill_left <= 1e-6:
                req = self.waiting.popleft()
                req.prefill_left = 0.0
                req.first_token_s = t
                req.decoded = 1.0
                tokens += 1.0
                self._admit(req)
        return segments, tokens

    def _start_run(self) -> _Run | None:
        """The next run of identical steps, up to the next event (a prompt done, a sequence
        done); None: nothing to do."""
        b = len(self.running)
        budget = float("inf") if self.token_budget is None else float(self.token_budget)
        plan = self._prefill_plan(budget - b)
        if b == 0 and not plan:
            return None
        steps = float("inf")
        if plan:
            head, n = plan[-1]
            completes = len(plan) > 1 or head.prefill_left <= n + 1e-9
            steps = 1.0 if completes else head.prefill_left / n
        if b:
            steps = min(steps, min(r.output_tokens - r.decoded for r in self.running))
        self._run = _Run(plan, b, max(steps, 1e-9))
        return self._run

    def _prefill_plan(self, budget: float) -> list[tuple[Request, float]]:
        """Prompt tokens each waiting request prefills in the next step: first come first
        served, within ``budget`` tokens and the batch slots left."""
        plan: list[tuple[Request, float]] = []
        slots = self.max_batch - len(self.running)
        for req in self.waiting:
            if budget <= 0 or len(plan) >= slots:
                break
            n = min(budget, req.prefill_left)
            if n <= 0:
                continue
            plan.append((req, n))
            budget -= n
        return plan

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
        self.done.append(Finished(first - r.arrive_s, tpot, r.output_tokens, r.arrive_s))
