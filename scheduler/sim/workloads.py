"""Modelled workloads: request arrivals, inference replica queues, and job bookkeeping.

Inference: requests (prompt and output tokens) arrive by a Poisson or bursty process or
from a trace file, are routed to replicas by the controller's load weights, and each
replica spends each step first on prefill (compute-bound), then on decode of the
requests whose prefill is done (memory-bound), batching ``batch`` sequences; the rest of
the step it idles. Training: synchronous data-parallel shards advance at the pace of the
slowest; faster shards wait (idle) for the rest of the step.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from greenllm.errors import ConfigError
from scheduler.sim.scenario import Arrivals, SimJob

#: Seconds over which an inference backlog should be drained (sets its demand).
DRAIN_HORIZON_S = 5.0
#: Decode capacity asked for per output token/s of demand: prefill shares the replicas'
#: time, and arrivals fluctuate around their mean.
DEMAND_HEADROOM = 1.25
#: Smoothing rate of the measured arrival rate, per second (1 / time constant).
ARRIVAL_EWMA = 0.3


def load_request_trace(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``t_s,prompt_tokens,output_tokens`` rows (header required), sorted by time.

    Raises:
        ConfigError: The file is missing or malformed; the message names file and line.
    """
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            want = {"t_s", "prompt_tokens", "output_tokens"}
            if reader.fieldnames is None or not want <= set(reader.fieldnames):
                raise ConfigError(f"{path}: header must be t_s,prompt_tokens,output_tokens")
            rows = []
            for line, row in enumerate(reader, start=2):
                try:
                    rows.append(
                        (
                            float(row["t_s"]),
                            float(row["prompt_tokens"]),
                            float(row["output_tokens"]),
                        )
                    )
                except (TypeError, ValueError):
                    raise ConfigError(f"{path}:{line}: expected three numbers") from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    arr = np.asarray(sorted(rows), dtype=float).reshape(-1, 3)
    return arr[:, 0], arr[:, 1], arr[:, 2]


class ArrivalStream:
    """Requests arriving for one inference job."""

    def __init__(self, arrivals: Arrivals, base_dir: Path, rng: np.random.Generator) -> None:
        self.spec = arrivals
        self._rng = rng
        self._trace: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._cursor = 0
        if arrivals.process == "trace" and arrivals.trace_file is not None:
            path = arrivals.trace_file
            self._trace = load_request_trace(path if path.is_absolute() else base_dir / path)

    def rate_rps(self, t_s: float) -> float:
        """Mean request rate at time ``t_s`` (Poisson and bursty), requests/s."""
        a = self.spec
        if a.process == "bursty" and (t_s % a.period_s) < a.burst_s:
            return a.rate_rps * a.burst_factor
        return a.rate_rps

    def take(self, t0_s: float, t1_s: float) -> tuple[float, float]:
        """Prompt and output tokens of the requests arriving in ``[t0_s, t1_s)``."""
        if self._trace is not None:
            times, prompts, outputs = self._trace
            end = int(np.searchsorted(times, t1_s, side="left"))
            sl = slice(self._cursor, end)
            self._cursor = end
            return float(np.sum(prompts[sl])), float(np.sum(outputs[sl]))
        n = int(self._rng.poisson(self.rate_rps(t0_s) * (t1_s - t0_s)))
        return float(n * self.spec.prompt_tokens), float(n * self.spec.output_tokens)


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

    def serve(
        self, step_s: float, prefill_rate: float, decode_rate: float
    ) -> tuple[float, float, float]:
        """Spend up to ``step_s`` on prefill then decode.

        Returns:
            Seconds of prefill, seconds of decode, output tokens decoded.
        """
        prefill_s = min(step_s, self.prompt_tokens / prefill_rate) if prefill_rate > 0 else 0.0
        done = prefill_s * prefill_rate
        if self.prompt_tokens > 0:
            released = self.output_waiting * min(1.0, done / self.prompt_tokens)
        else:
            released = 0.0
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


@dataclass
class JobRun:
    """A job's state during a simulation.

    Attributes:
        spec: Its scenario entry.
        job_id: Its id.
        phase: ``waiting`` (not arrived), ``pending``, ``running`` or ``done``.
        gpus: Global indices of the GPUs its shards run on.
        work_units: Units done (samples, or prompt+output tokens).
        energy_j: Energy of its GPUs while assigned, joules.
        samples_done: Training progress, samples.
        offered_output_tokens: Output tokens that arrived (inference).
        served_output_tokens: Output tokens decoded (inference).
        running_s: Seconds spent running.
        finished_s: When it completed (None: not yet).
        queues: Per GPU, its replica queue (inference).
        backlog: Requests not routed to a replica yet (inference).
        weights: Per GPU, the controller's load weight.
        arrival_ewma_tps: Smoothed output-token arrival rate, tokens/s.
        arrivals: The request stream (inference).
    """

    spec: SimJob
    job_id: str
    phase: str = "waiting"
    gpus: list[int] = field(default_factory=list)
    work_units: float = 0.0
    energy_j: float = 0.0
    samples_done: float = 0.0
    offered_output_tokens: float = 0.0
    served_output_tokens: float = 0.0
    running_s: float = 0.0
    finished_s: float | None = None
    queues: dict[int, ReplicaQueue] = field(default_factory=dict)
    backlog: ReplicaQueue = field(default_factory=ReplicaQueue)
    weights: dict[int, float] = field(default_factory=dict)
    arrival_ewma_tps: float = 0.0
    arrivals: ArrivalStream | None = None

    def route(self, prompt_tokens: float, output_tokens: float) -> None:
        """Add arrivals (and any unrouted backlog) to replicas in proportion to weights."""
        self.offered_output_tokens += output_tokens
        self.backlog.add(prompt_tokens, output_tokens)
        if not self.queues:
            return
        total = sum(self.weights.get(g, 0.0) for g in self.queues)
        for g, q in self.queues.items():
            share = self.weights.get(g, 0.0) / total if total > 0 else 1.0 / len(self.queues)
            q.prompt_tokens += self.backlog.prompt_tokens * share
            q.output_waiting += self.backlog.output_waiting * share
            q.output_ready += self.backlog.output_ready * share
        self.backlog = ReplicaQueue()

    def unplace(self) -> None:
        """Stop every shard (node failure): queued requests go back to the backlog."""
        for q in self.queues.values():
            self.backlog.prompt_tokens += q.prompt_tokens
            self.backlog.output_waiting += q.output_waiting + q.output_ready
        self.queues = {}
        self.weights = {}
        self.gpus = []
        self.phase = "pending"

    def backlog_output_tokens(self) -> float:
        """Output tokens waiting anywhere (routed or not)."""
        return self.backlog.backlog_output_tokens + sum(
            q.backlog_output_tokens for q in self.queues.values()
        )

    def demand_tps(self) -> float:
        """Decode tokens/s the job needs: smoothed arrivals plus draining its backlog,
        with :data:`DEMAND_HEADROOM`."""
        need = self.arrival_ewma_tps + self.backlog_output_tokens() / DRAIN_HORIZON_S
        return DEMAND_HEADROOM * need
