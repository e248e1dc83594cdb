"""A replica engine: continuous batching over one model on one GPU, with per-request energy.

One serving thread runs batched steps. Between steps, finished and cancelled requests
leave the batch and queued ones join it (:class:`workers.serve.kvbatch.KVBatch`). Each step
decodes one token of every running row, then prefills waiting prompts with what is left of
the step's token budget (chunked prefill, :mod:`greenllm.serving.chunking`, as vLLM does and
as the simulator's replica model does): whole prompts that fit join the batch in one
forward; a prompt that does not fit is prefilled a chunk per step in a cache of its own and
joins once done, so a long prompt delays the running rows by a chunk, not its whole
prefill. A request holds a batch slot from its first chunk. After each forward the GPU's
energy counter is read and the energy since the previous reading is split among the
forward's requests by the tokens each processed
(:class:`workers.serve.request_energy.RequestEnergySplit`); energy read while no request is
in flight is idle energy.

On a simulated GPU the model runs on the CPU and each step lasts at least as long as the GPU
would take at its power limit and clocks (:mod:`greenllm.pacing`): a prefill (or chunk) its
prompt tokens at the prefill rate, a decode step its batch's tokens at the decode rate of a batch
that size. The GPU runs that step's workload while requests are in flight (busy only for
the time the step needs when the CPU is slower) and idles otherwise, so its energy
counter follows.
On a real GPU the model runs on CUDA and the counter is NVML's.

Every accepted request ends with exactly one :class:`~workers.serve.stream.FinishEvent`:
completed, cancelled, or failed (the replica stopped, the model failed). None is dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn
from transformers import DynamicCache

from greenllm.devices import physics
from greenllm.devices.base import GPU
from greenllm.devices.cuda import torch_device_index
from greenllm.devices.simulated import SimulatedGPU
from greenllm.serving.chunking import step_token_budget
from greenllm.workloads import Tokenizer, load_model
from workers.serve.kvbatch import KVBatch
from workers.serve.replica_metrics import MetricsRecorder, ReplicaMetrics
from workers.serve.request import Request, check_sizes
from workers.serve.request_energy import RequestEnergySplit
from workers.serve.stream import (
    GenerationError,
    QueueFullError,
    ReplicaStoppedError,
    RequestStream,
    Sampling,
    ServeError,
)
from workers.shards.pacing import Pacer, sync_busy_fraction

#: Model loading is not thread-safe in transformers: replicas of a process load one at a time.
_LOAD_LOCK = threading.Lock()
_IDS = itertools.count()


@dataclass
class _Partial:
    """A prompt being prefilled a chunk per step (outside the batch until done)."""

    request: Request
    cache: DynamicCache | None = None
    done_tokens: int = 0

    @property
    def left_tokens(self) -> int:
        return len(self.request.prompt_ids) - self.done_tokens


class ReplicaEngine:
    """Serves generation requests from one model on one GPU (see module doc).

    Args:
        model: A Hugging Face causal LM; moved to ``device`` and put in eval mode.
        tokenizer: Its tokenizer (its EOS id ends a request and pads the batch).
        gpu: The GPU it runs on: its energy counter is metered; a :class:`SimulatedGPU`
            also paces CPU steps (unless ``device`` is CUDA).
        model_id: Name the model is served under.
        name: Replica name (routing key, metrics label).
        max_batch: Most requests decoded together.
        max_queue: Most requests waiting for a batch slot; more are refused (429).
        device: torch device (default: ``cpu`` on a simulated GPU, else the CUDA device
            with the GPU's UUID).
        workload: What a simulated GPU runs while busy (default: decode at ``max_batch``).
        clock: Returns the time, seconds.
        max_num_batched_tokens: Most tokens one step processes, decodes plus prefill (None:
            the default for the GPU's memory, :func:`greenllm.serving.chunking.step_token_budget`).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        gpu: GPU,
        model_id: str,
        name: str = "replica-0",
        max_batch: int = 8,
        max_queue: int = 64,
        device: str | None = None,
        workload: physics.Workload | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_num_batched_tokens: int | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 0:
            raise ValueError("max_batch must be >= 1 and max_queue >= 0")
        if device is None:  # CUDA by UUID: cuda:N and NVML GPU N may be different boards
            simulated = isinstance(gpu, SimulatedGPU)
            device = "cpu" if simulated else f"cuda:{torch_device_index(gpu.uuid)}"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer, self.gpu, self.model_id, self.name = tokenizer, gpu, model_id, name
        self.max_batch, self.max_queue = max_batch, max_queue
        config = getattr(model, "config", None)
        self.context_tokens = int(getattr(config, "max_position_embeddings", 0) or 0)
        self._clock = clock
        self._stop = threading.Event()
        self._stop_reason = ""
        self._cond = threading.Condition()
        self._queue: deque[Request] = deque()
        self._busy = False
        #: When the last paced step's wait ended (None: idle since), seconds.
        self._paced_until_s: float | None = None
        self._batch = KVBatch(self.model, tokenizer.eos_token_id, self.device)
        self._rows: list[Request] = []
        self._partial: _Partial | None = None
        #: Most tokens one step processes (decodes first, then prefill chunks).
        self.step_tokens = step_token_budget(gpu.memory_total_mib(), max_num_batched_tokens)
        self._workload = workload or physics.Workload("decode", batch=max_batch)
        self._sim: SimulatedGPU | None = None
        if isinstance(gpu, SimulatedGPU) and self.device.type == "cpu":
            self._sim = gpu
        self.pacer: Pacer | None = None
        if self._sim is not None:
            self._sim.set_workload(None)
            self._sim.set_busy_fraction(1.0)
            self.pacer = Pacer(self._sim.throughput, clock=clock, stop_event=self._stop)
        self.ledger = RequestEnergySplit(gpu.energy_j)
        self.recorder = MetricsRecorder(clock)
        #: Output tokens asked for by the requests it accepted (max_tokens each), tokens.
        self.offered_tokens = 0
        #: Prompt tokens of the requests it accepted, tokens.
        self.offered_prompt_tokens = 0
        self._thread = threading.Thread(target=self._serve, name=f"serve-{name}", daemon=True)

    @classmethod
    def load(cls, model_name: str, gpu: GPU, **kwargs: object) -> ReplicaEngine:
        """A replica of ``model_name`` (``tiny``, ``small``, ``smollm2-135m``, a model or
        compressed-artifact directory; see :func:`greenllm.workloads.load_model`).

        Raises:
            GreenllmError: The model cannot be loaded.
        """
        with _LOAD_LOCK:
            loaded = load_model(model_name)
        kwargs.setdefault("model_id", model_name)
        return cls(loaded.model, loaded.tokenizer, gpu, **kwargs)  # type: ignore[arg-type]

    # -- requests -----------------------------------------------------------------------
    def start(self) -> ReplicaEngine:
        """Start the serving thread; returns the engine."""
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """Whether it takes requests."""
        return not self._stop.is_set()

    def load_now(self) -> tuple[int, int]:
        """``(queued, in batch)`` requests right now."""
        with self._cond:
            return len(self._queue), len(self._rows) + (self._partial is not None)

    def check(self, prompt_tokens: int, max_tokens: int) -> None:
        """Raise what :meth:`submit` would for these sizes (stopped, empty, too long)."""
        if self._stop.is_set():
            raise ReplicaStoppedError(f"replica {self.name} stopped: {self._stop_reason}")
        check_sizes(self.context_tokens, prompt_tokens, max_tokens)

    def submit(
        self,
        prompt_ids: Sequence[int],
        max_tokens: int,
        sampling: Sampling | None = None,
        request_id: str | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        tokens: bool = True,
    ) -> RequestStream:
        """Queue a request.

        Args:
            prompt_ids: Prompt token ids.
            max_tokens: Most tokens to generate.
            sampling: Sampling settings (default: greedy).
            request_id: Its id (default: generated).
            loop: Deliver events to this asyncio loop (default: the running loop, if any).
            tokens: Deliver a TokenEvent per token (False: only the finish, which carries
                every token; saves a wake-up per token when nobody streams).

        Returns:
            The request's event stream.

        Raises:
            ServeError: Refused: stopped (503), empty or too long (400), queue full (429).
        """
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        rid = request_id or f"{self.name}-{next(_IDS)}"
        try:
            self.check(len(prompt_ids), max_tokens)
            with self._cond:
                self.check(len(prompt_ids), max_tokens)
                if len(self._queue) >= self.max_queue:
                    raise QueueFullError(
                        f"replica {self.name}: {len(self._queue)} requests already wait",
                        retry_after_s=self._retry_after_s(),
                    )
                stream = RequestStream(rid, loop, tokens=tokens)
                request = Request(stream, list(prompt_ids), max_tokens, sampling or Sampling())
                request.submitted_s = self._clock()
                self._queue.append(request)
                self.offered_tokens += max_tokens
                self.offered_prompt_tokens += len(prompt_ids)
                self._cond.notify()
        except ServeError:
            self.recorder.rejected()
            raise
        return stream

    def waiting_tokens(self) -> int:
        """Output tokens asked by the requests waiting for a batch slot (at most: each may
        stop early at EOS), tokens."""
        with self._cond:
            return sum(r.max_tokens for r in self._queue)

    def waiting_prompt_tokens(self) -> int:
        """Prompt tokens not prefilled yet (queued requests and a prompt part-way), tokens."""
        with self._cond:
            partial = self._partial.left_tokens if self._partial is not None else 0
            return partial + sum(len(r.prompt_ids) for r in self._queue)

    def oldest_wait_s(self) -> float:
        """How long the oldest request still without its first token has waited, s."""
        with self._cond:
            waiting = [r.submitted_s for r in self._queue]
            if self._partial is not None:
                waiting.append(self._partial.request.submitted_s)
        return max(0.0, self._clock() - min(waiting)) if waiting else 0.0

    def _retry_after_s(self) -> float:
        latency_s = self.recorder.mean_latency_s() or 1.0
        return max(1.0, math.ceil(latency_s * (len(self._queue) + 1) / self.max_batch))

    def stop(self, reason: str = "replica stopped", timeout_s: float = 30.0) -> None:
        """Stop serving: queued and running requests fail with ``reason`` (503)."""
        with self._cond:
            if not self._stop.is_set():
                self._stop_reason = reason
            self._stop.set()
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        error = ReplicaStoppedError(f"replica {self.name} stopped: {self._stop_reason}")
        for request in pending:
            self._finish(request, "error", error)
        if not self._thread.is_alive() and self._thread.ident is None:
            self._fail_rows(error)
        elif threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def metrics(self) -> ReplicaMetrics:
        """The replica's figures now (books idle energy up to now when idle)."""
        with self._cond:
            if not self._busy and self._thread.is_alive():
                self.ledger.idle()
            queued = len(self._queue)
            in_batch = len(self._rows) + (self._partial is not None)
        return self.recorder.snapshot(
            self.ledger.totals(),
            name=self.name,
            model_id=self.model_id,
            running=self.running,
            queued=queued,
            in_batch=in_batch,
            max_queue=self.max_queue,
            max_batch=self.max_batch,
        )

    # -- serving ------------------------------------------------------------------------
    def _finish(self, request: Request, reason: str, error: ServeError | None = None) -> None:
        result = request.finish(reason, self._clock(), error)
        self.recorder.finished(result)

    def _fail_rows(self, error: ServeError) -> None:
        """Fail every running row (their share of the energy since the last step first),
        and a prompt part-way through its prefill."""
        partial, self._partial = self._partial, None
        if partial is not None:
            self._finish(partial.request, "error", error)
        rows, self._rows = self._rows, []
        if rows:
            for request, joules in self.ledger.step({r: 1 for r in rows}).items():
                request.energy_j += joules
        self._batch.leave(rows)
        for request in rows:
            self._finish(request, "error", error)

    def _set_busy(self, busy: bool) -> None:
        self._paced_until_s = None  # idle time between busy spells is not a step's
        if self._sim is not None:
            self._sim.set_workload(self._workload if busy else None)

    def _serve(self) -> None:
        """Serve until stopped; whatever ends the loop, every request still held fails."""
        failure = ""
        try:
            self._serve_loop()
        except BaseException as exc:
            failure = f"serving failed: {type(exc).__name__}: {exc}"
            raise
        finally:
            with self._cond:
                if not self._stop.is_set():
                    self._stop_reason = failure or "serving ended"
                self._stop.set()
                pending, self._queue = list(self._queue), deque()
            error = ReplicaStoppedError(f"replica {self.name} stopped: {self._stop_reason}")
            for request in pending:
                self._finish(request, "error", error)
            self._fail_rows(error)
            self.ledger.idle()
            self._set_busy(False)

    def _serve_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stop.is_set() and not (self._queue or self._rows or self._partial):
                    if self._busy:
                        self._busy = False
                        self._set_busy(False)
                    self._cond.wait()
                if self._stop.is_set():
                    return
                chunk, joiners = self._plan_prefill()
                was_busy, self._busy = self._busy, True
            if not was_busy:
                self.ledger.idle()
                self._set_busy(True)
            dropped = [r for r in joiners if r.stream.cancelled]
            for request in dropped:
                self._finish(request, "cancelled")
            joiners = [r for r in joiners if not r.stream.cancelled]
            try:
                if self._rows:
                    self._decode()
                if chunk:
                    self._chunk(chunk)
                if joiners:
                    self._prefill(joiners)
            except Exception as exc:  # a model failure fails its batch, never the replica
                self._fail_rows(GenerationError(f"generation failed: {type(exc).__name__}: {exc}"))
                self._batch = KVBatch(self.model, self.tokenizer.eos_token_id, self.device)
            self._retire()

    def _plan_prefill(self) -> tuple[int, list[Request]]:
        """What this step prefills within its token budget (called holding the lock): the
        prompt part-way first, then whole queued prompts that fit, first come first served;
        the first that does not fit starts its chunks. Returns the tokens of the chunk of
        the prompt part-way (0: none) and the requests whose whole prompt joins now."""
        budget = self.step_tokens - len(self._rows)
        slots = self.max_batch - len(self._rows)
        chunk = 0
        if self._partial is not None:
            slots -= 1
            chunk = min(budget, self._partial.left_tokens)
            budget -= chunk
            if chunk < self._partial.left_tokens:
                return chunk, []
        joiners: list[Request] = []
        while self._queue and budget > 0 and slots > 0:
            need = len(self._queue[0].prompt_ids)
            if need <= budget:
                joiners.append(self._queue.popleft())
                budget -= need
                slots -= 1
            elif self._partial is None:
                self._partial = _Partial(self._queue.popleft())
                chunk = budget
                break
            else:
                break
        return chunk, joiners

    def _step(
        self, rows: list[Request], tokens: dict[Request, int], logits: torch.Tensor, start_s: float
    ) -> list[int]:
        """Sample, pace, book energy and deliver tokens for one step of ``rows``."""
        if all(r.sampling.temperature <= 0 for r in rows):
            sampled = [int(t) for t in logits.argmax(dim=-1).tolist()]
        else:
            sampled = [r.sample(logits[i]) for i, r in enumerate(rows)]
        prompt = sum(tokens.values()) if rows[0].first_token_s is None else 0
        self._account(len(rows), prompt, tokens, start_s)
        now_s = self._clock()
        eos = self.tokenizer.eos_token_id
        for request, token in zip(rows, sampled, strict=True):
            request.deliver(token, now_s, eos)
        return sampled

    def _account(
        self, rows: int, prompt_tokens: int, tokens: dict[Request, int], start_s: float
    ) -> None:
        """Pace a forward that started at ``start_s`` (a prefill of ``prompt_tokens``, else a
        decode of ``rows``) and book its energy by the tokens each request processed."""
        if self.pacer is not None:
            # The serving loop's own work between steps (delivering tokens, retiring rows)
            # overlaps the GPU's, as a real GPU runs ahead of its host: a step paced while
            # the engine stays busy counts from the end of the previous step's wait.
            since_s = start_s if self._paced_until_s is None else min(start_s, self._paced_until_s)
            self._pace(rows, prompt_tokens, self._clock() - since_s)
            self._paced_until_s = self._clock()
        for request, joules in self.ledger.step(tokens).items():
            request.energy_j += joules
        generated = 0 if prompt_tokens and not rows else rows
        self.recorder.step(generated, prompt_tokens, self._clock() - start_s)

    def _pace(self, rows: int, prompt_tokens: int, step_s: float) -> None:
        """Wait for the simulated GPU after a step of ``step_s`` seconds: a prefill of
        ``prompt_tokens`` (prompt tokens at the prefill rate), else a decode of ``rows``
        tokens at the decode rate of a batch of ``rows``."""
        assert self._sim is not None and self.pacer is not None
        kind: physics.WorkloadKind = "prefill" if prompt_tokens else "decode"
        workload = replace(self._workload, kind=kind, batch=max(1, rows))
        if self._sim.workload != workload:
            self._sim.set_workload(workload)
        self.pacer.pace(prompt_tokens or rows, step_s)
        sync_busy_fraction(self._sim, self.pacer)

    def _prefill(self, joiners: list[Request]) -> None:
        start_s = self._clock()
        for request in joiners:
            request.started_s = start_s
        with self._cond:
            self._rows.extend(joiners)  # held from here: a failure fails them too
        logits = self._batch.join(joiners, [r.prompt_ids for r in joiners])
        tokens = self._step(joiners, {r: len(r.prompt_ids) for r in joiners}, logits, start_s)
        first = len(self._rows) - len(joiners)
        self._batch.set_pending(tokens, rows=range(first, len(self._rows)))

    def _chunk(self, tokens: int) -> None:
        """Prefill the next ``tokens`` of the prompt part-way; once done, it joins the batch
        with its first token."""
        part = self._partial
        assert part is not None
        request = part.request
        if request.stream.cancelled:
            with self._cond:
                self._partial = None
            self._finish(request, "cancelled")
            return
        start_s = self._clock()
        if request.started_s is None:
            request.started_s = start_s
        ids = request.prompt_ids[part.done_tokens : part.done_tokens + tokens]
        part.cache, logits = self._batch.prefill_chunk(ids, part.done_tokens, part.cache)
        part.done_tokens += len(ids)
        if part.left_tokens > 0:
            self._account(0, len(ids), {request: len(ids)}, start_s)
            return
        with self._cond:
            self._partial = None
            self._rows.append(request)
        self._batch.join_cache(request, part.cache, part.done_tokens)
        token = self._step([request], {request: len(ids)}, logits, start_s)
        self._batch.set_pending(token, rows=[len(self._rows) - 1])

    def _decode(self) -> None:
        start_s = self._clock()
        rows = list(self._rows)
        logits = self._batch.decode()
        self._batch.set_pending(self._step(rows, dict.fromkeys(rows, 1), logits, start_s))

    def _retire(self) -> None:
        """Finished and cancelled rows leave the batch and get their final event."""
        leaving = [r for r in self._rows if r.done_reason or r.stream.cancelled]
        if not leaving:
            return
        with self._cond:
            self._rows = [r for r in self._rows if r not in leaving]
        self._batch.leave(leaving)
        for request in leaving:
            self._finish(request, request.done_reason or "cancelled")
