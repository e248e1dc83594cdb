"""An inference replica: batched generation serving a queue of requests.

A serving thread decodes up to ``batch_size`` requests together
(:mod:`workers.shards.decode`) and completes each as soon as it has its tokens. Requests
join between decode steps: when a slot is free and requests wait, the batch is rebuilt
with them, at most every :data:`REBUILD_EVERY_STEPS` steps (the running rows' prompts and
tokens so far are prefilled again, and greedy decoding continues from there), so a short
request never waits behind a long one.

Every accepted request gets exactly one :class:`Completion`: its tokens, or an ``error``
(too long for the model, the replica stopped, the model failed). On
:meth:`InferenceReplica.stop` the batch being decoded and every queued request are failed
with the reason; none is dropped.

With no GPU the replica runs on the CPU and, given its simulated GPU's throughput, each
forward pass is paced (:mod:`greenllm.pacing`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from torch import nn

from greenllm.errors import ConfigError
from greenllm.jobspec import JobSpec
from greenllm.workloads import load_model
from workers.shards.decode import decode_steps
from workers.shards.pacing import Pacer

#: Latencies kept for the percentiles (the most recent ones).
LATENCY_WINDOW = 10_000
#: Rates are measured over this many most recent seconds, so they follow power changes.
RATE_WINDOW_S = 10.0
#: Decode steps a batch runs before it is rebuilt to take waiting requests (each rebuild
#: prefills the running rows again, so rebuilding at every step would cost more than it
#: saves).
REBUILD_EVERY_STEPS = 8


@dataclass(frozen=True)
class Completion:
    """The answer to one request.

    Attributes:
        request_id: Id given at submission.
        output_ids: Generated token ids (empty on error).
        latency_s: Submission to completion, seconds.
        first_token_s: Submission to first token, seconds (None when none came).
        error: Why it failed, or None when it completed.
    """

    request_id: int
    output_ids: list[int]
    latency_s: float
    first_token_s: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class ReplicaStats:
    """A replica's figures since it started.

    Attributes:
        completed: Requests completed.
        failed: Requests answered with an error.
        queued: Requests waiting for a batch.
        running: Requests in the batch being decoded.
        tokens: Tokens generated.
        tokens_per_s: Tokens generated per wall second over the last
            :data:`RATE_WINDOW_S` (or since the first request, if later), tokens/s.
        busy_tokens_per_s: Tokens generated per second spent decoding over the same
            window, tokens/s: the replica's capacity at its current settings (what routing
            weights follow); 0 until it has decoded.
        p50_latency_s: Median latency of completed requests, seconds (None: none yet).
        p95_latency_s: 95th percentile, seconds.
        p99_latency_s: 99th percentile, seconds.
    """

    completed: int
    failed: int
    queued: int
    running: int
    tokens: int
    tokens_per_s: float
    busy_tokens_per_s: float
    p50_latency_s: float | None
    p95_latency_s: float | None
    p99_latency_s: float | None


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Linear-interpolated ``pct``-th percentile (0-100) of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(eq=False)
class _Request:
    request_id: int
    prompt_ids: list[int]
    max_new_tokens: int
    submitted_s: float
    future: Future[Completion]
    output_ids: list[int] = field(default_factory=list)
    first_token_s: float | None = None


class InferenceReplica:
    """Serves generation requests with batched greedy decoding.

    Args:
        model: A Hugging Face causal LM (moved to ``device``, put in eval mode).
        pad_id: Token id used as left padding.
        batch_size: Most requests decoded together.
        sim_throughput: The simulated GPU's throughput now, tokens/s; when given, each
            decode step of ``b`` tokens lasts at least ``b / throughput`` (absolute pacing,
            :mod:`greenllm.pacing`; the GPU's workload is the job's, at its full batch).
        reference_throughput_per_s: Ignored (pacing is absolute); kept for old callers.
        device: torch device (default: ``cuda`` when available, else ``cpu``).
        clock: Returns the time, seconds.
    """

    def __init__(
        self,
        model: nn.Module,
        pad_id: int,
        batch_size: int,
        sim_throughput: Callable[[], float] | None = None,
        reference_throughput_per_s: float | None = None,
        device: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.pad_id = pad_id
        self.batch_size = batch_size
        config = getattr(model, "config", None)
        self.context_tokens = int(getattr(config, "max_position_embeddings", 0) or 0)
        self._clock = clock
        self._stop = threading.Event()
        self.pacer: Pacer | None = None
        if sim_throughput is not None:
            self.pacer = Pacer(sim_throughput, clock=clock, stop_event=self._stop)
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._running: list[_Request] = []
        self._stop_reason = ""
        self._next_id = 0
        self._latencies_s: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._completed = 0
        self._failed = 0
        self._tokens = 0
        # (time, tokens, busy seconds) of each decode step within the rate window.
        self._steps: deque[tuple[float, int, float]] = deque()
        self._first_submit_s: float | None = None
        self._thread = threading.Thread(target=self._serve, name="inference-replica", daemon=True)

    @classmethod
    def from_spec(
        cls, spec: JobSpec, sim_throughput: Callable[[], float] | None = None
    ) -> InferenceReplica:
        """A replica of an inference job, its model loaded by name (see greenllm.workloads).

        Raises:
            ConfigError: ``spec`` is not an inference job.
            GreenllmError: The model cannot be loaded.
        """
        if spec.kind != "infer":
            raise ConfigError(f"job {spec.name}: an inference replica needs kind 'infer'")
        loaded = load_model(spec.model)
        return cls(
            loaded.model,
            loaded.tokenizer.eos_token_id,
            spec.infer_settings.batch_size,
            sim_throughput=sim_throughput,
        )

    # -- requests -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the serving thread."""
        self._thread.start()

    def submit(self, prompt_ids: Sequence[int], max_new_tokens: int) -> Future[Completion]:
        """Queue a request; the future always resolves to a :class:`Completion`."""
        future: Future[Completion] = Future()
        now_s = self._clock()
        with self._cond:
            request = _Request(self._next_id, list(prompt_ids), max_new_tokens, now_s, future)
            self._next_id += 1
            if self._first_submit_s is None:
                self._first_submit_s = now_s
            problem = self._reject_reason(request)
            queued = problem is None and max_new_tokens > 0
            if queued:
                self._queue.append(request)
                self._cond.notify()
        if not queued:
            self._finish(request, problem)
        return future

    def _reject_reason(self, request: _Request) -> str | None:
        if self._stop.is_set():
            return f"replica stopped: {self._stop_reason}"
        if not request.prompt_ids:
            return "empty prompt"
        if request.max_new_tokens < 0:
            return "max_new_tokens must not be negative"
        total = len(request.prompt_ids) + request.max_new_tokens
        if self.context_tokens and total > self.context_tokens:
            return (
                f"prompt of {len(request.prompt_ids)} + {request.max_new_tokens} new tokens "
                f"exceeds the model context of {self.context_tokens} tokens"
            )
        return None

    def stop(self, reason: str = "replica stopped", timeout_s: float = 30.0) -> None:
        """Fail the running batch and every queued request with ``reason``; end serving."""
        with self._cond:
            self._stop_reason = reason
            self._stop.set()
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for request in pending:
            self._finish(request, f"replica stopped: {reason}")
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def stats(self) -> ReplicaStats:
        """Counts, throughput and latency percentiles so far."""
        with self._cond:
            latencies = list(self._latencies_s)
            now_s = self._clock()
            self._prune(now_s)
            tokens = sum(step[1] for step in self._steps)
            busy_s = sum(step[2] for step in self._steps)
            first_s = self._first_submit_s
            elapsed_s = min(RATE_WINDOW_S, now_s - first_s) if first_s is not None else 0.0
            return ReplicaStats(
                completed=self._completed,
                failed=self._failed,
                queued=len(self._queue),
                running=len(self._running),
                tokens=self._tokens,
                tokens_per_s=tokens / elapsed_s if elapsed_s > 0 else 0.0,
                busy_tokens_per_s=tokens / busy_s if busy_s > 0 else 0.0,
                p50_latency_s=percentile(latencies, 50),
                p95_latency_s=percentile(latencies, 95),
                p99_latency_s=percentile(latencies, 99),
            )

    # -- serving ------------------------------------------------------------------------
    def _prune(self, now_s: float) -> None:
        """Forget decode steps older than the rate window (call holding the lock)."""
        while self._steps and self._steps[0][0] < now_s - RATE_WINDOW_S:
            self._steps.popleft()

    def _finish(self, request: _Request, error: str | None) -> None:
        now_s = self._clock()
        completion = Completion(
            request_id=request.request_id,
            output_ids=[] if error else list(request.output_ids),
            latency_s=now_s - request.submitted_s,
            first_token_s=request.first_token_s,
            error=error,
        )
        with self._cond:
            if error is None:
                self._completed += 1
                self._latencies_s.append(completion.latency_s)
            else:
                self._failed += 1
        request.future.set_result(completion)

    def _serve(self) -> None:
        batch: list[_Request] = []
        while True:
            with self._cond:
                while not self._queue and not batch and not self._stop.is_set():
                    self._cond.wait()
                if not self._stop.is_set():
                    while self._queue and len(batch) < self.batch_size:
                        batch.append(self._queue.popleft())
                self._running = list(batch)
            if self._stop.is_set():
                for request in batch:
                    self._finish(request, f"replica stopped: {self._stop_reason}")
                with self._cond:
                    self._running = []
                return
            try:
                self._decode(batch)
            except Exception as exc:  # a model failure fails its batch, never the replica
                for request in batch:
                    if not request.future.done():
                        self._finish(request, f"generation failed: {exc}")
            batch = [r for r in batch if not r.future.done()]

    def _decode(self, batch: list[_Request]) -> None:
        """Decode ``batch`` until it is done, stopped, or (after :data:`REBUILD_EVERY_STEPS`)
        a free slot can take a queued request: the rows still running are then prefilled
        again together with the new ones."""
        prompts = [r.prompt_ids + r.output_ids for r in batch]
        steps = max(r.max_new_tokens - len(r.output_ids) for r in batch)
        tokens = decode_steps(self.model, prompts, steps, self.pad_id, self.device)
        start_s = self._clock()
        for step, tokens_now in enumerate(tokens, start=1):
            if self._stop.is_set():
                break
            active = [r for r in batch if not r.future.done()]
            if self.pacer is not None:
                self.pacer.pace(len(active), self._clock() - start_s)
            now_s = self._clock()
            for request, token in zip(batch, tokens_now, strict=True):
                if request in active:
                    request.output_ids.append(token)
                    if request.first_token_s is None:
                        request.first_token_s = now_s - request.submitted_s
            with self._cond:
                self._tokens += len(active)
                self._steps.append((now_s, len(active), now_s - start_s))
                self._prune(now_s)
            for request in active:
                if len(request.output_ids) >= request.max_new_tokens:
                    self._finish(request, None)
            running = sum(not r.future.done() for r in batch)
            admit = step >= REBUILD_EVERY_STEPS and self._queue and running < self.batch_size
            if running == 0 or admit:
                break
            start_s = self._clock()
        tokens.close()
