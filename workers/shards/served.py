"""An inference shard: one replica of the job's model on its GPU, behind its own
OpenAI-compatible API.

The replica is a :class:`~workers.serve.engine.ReplicaEngine` (continuous batching, the
GPU's energy split among the requests of each step) served by an
:class:`~workers.serve.server.ApiServer` on this node's address, on a free port. The
shard reports that URL (``endpoint``) in telemetry; the job's ingress
(:mod:`workers.serve.ingress`) routes the job's requests to it by the controller's load
weights. Nothing here knows about other replicas.

A job whose spec gives an ``infer.load`` section has a load that ends: the replica then
finishes (``done``) once the load's ``duration_s`` has passed since it started and no
request has been in flight for :data:`DRAIN_IDLE_S`. A job without one serves until it
is cancelled.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from greenllm.devices.base import GPU
from greenllm.jobspec import JobSpec
from workers.serve.engine import ReplicaEngine
from workers.serve.pool import ReplicaPool
from workers.serve.server import ApiServer
from workers.shards.status import ShardStatus

#: With a load that ends: seconds without a request in flight before the replica is done.
DRAIN_IDLE_S = 3.0
#: How often the replica's figures are copied into its status, seconds.
REPORT_EVERY_S = 0.25
#: Most requests waiting at one replica; more are refused with 429.
MAX_QUEUE = 64


def served_model_id(model: str) -> str:
    """The name a job's model is served under: a built-in name as is, a directory by its
    last component (``/models/my-llm`` -> ``my-llm``)."""
    return Path(model).name if ("/" in model or model.startswith(".")) else model


def has_load(spec: JobSpec) -> bool:
    """Whether the spec gives a request load (an ``infer.load`` section) of its own."""
    return spec.infer is not None and "load" in spec.infer.model_fields_set


class ServedReplica:
    """One replica of an inference job, served over HTTP (see module doc).

    Args:
        spec: The job.
        status: The shard's status, updated in place (under ``lock``).
        lock: Guards ``status``.
        gpu: The GPU it runs on (simulated: a paced CPU replica; NVML: CUDA).
        host: Address to listen on (this node's address, as other nodes reach it).
    """

    def __init__(
        self, spec: JobSpec, status: ShardStatus, lock: threading.Lock, gpu: GPU, host: str
    ) -> None:
        self.spec, self.status, self.lock, self.gpu, self.host = spec, status, lock, gpu, host
        self._stop = threading.Event()
        self.engine: ReplicaEngine | None = None
        #: GPU energy from the shard's start until its engine started (idle), joules.
        self._before_j = 0.0
        self.server: ApiServer | None = None

    def run(self, load_lock: threading.Lock) -> None:
        """Load the model (one replica at a time per node: ``load_lock``), serve until
        stopped, or until a load that ends has ended."""
        infer = self.spec.infer_settings
        start_j = float(self.status.extra.get("start_energy_j") or self.gpu.energy_j())
        with load_lock:
            if self._stop.is_set():
                return
            self.engine = ReplicaEngine.load(
                self.spec.model,
                self.gpu,
                name=self.status.shard_id,
                model_id=served_model_id(self.spec.model),
                max_batch=infer.batch_size,
                max_queue=MAX_QUEUE,
                workload=self.spec.workload(),
                max_num_batched_tokens=infer.max_num_batched_tokens,
            ).start()
        self._before_j = max(0.0, self.engine.ledger.start_j - start_j)
        self.server = ApiServer(ReplicaPool([self.engine]), host=self.host).start()
        started_s = time.monotonic()
        last_busy_s = started_s
        ends_s = started_s + infer.load.duration_s if has_load(self.spec) else None
        try:
            while not self._stop.wait(REPORT_EVERY_S):
                busy = self._report()
                now_s = time.monotonic()
                if busy:
                    last_busy_s = now_s
                if ends_s is not None and now_s >= ends_s and now_s - last_busy_s >= DRAIN_IDLE_S:
                    break
        finally:
            self.server.stop(stop_replicas=True)
            self._report()

    def stop(self) -> None:
        """Stop serving: queued and running requests fail with an error (streams end with
        an error event); returns at once (``run`` returns once the server is down)."""
        self._stop.set()

    def _report(self) -> bool:
        """Copy the replica's figures into the status; True while a request is in flight."""
        engine = self.engine
        if engine is None:
            return False
        m = engine.metrics()
        booked_j = engine.ledger.last_j
        waiting = engine.waiting_tokens()
        recent_ttft_s, recent_tpot_s = engine.recorder.recent_p99()
        with self.lock:
            s = self.status
            s.work_units = float(m.completion_tokens)
            s.requests = m.completed + m.failed + m.cancelled
            s.failed_requests = m.failed
            s.offered_units = float(engine.offered_tokens)
            s.queued_units = float(waiting)
            s.offered_prompt_tokens = float(engine.offered_prompt_tokens)
            s.queued_prompt_tokens = float(engine.waiting_prompt_tokens())
            s.extra.update(
                endpoint=self.server.base_url if self.server is not None else "",
                ttft_p50_s=m.ttft_p50_s,
                # what the controller's SLO feedback reads: the last LATENCY_WINDOW_S only
                ttft_p99_s=recent_ttft_s,
                tpot_p50_s=m.tpot_p50_s,
                tpot_p99_s=recent_tpot_s,
                oldest_wait_s=engine.oldest_wait_s(),
                queued_requests=m.queued,
                rejected_requests=m.rejected,
                idle_energy_j=m.idle_energy_j + self._before_j,
                booked_energy_counter_j=booked_j,
                energy_j=m.energy_j + self._before_j,
                request_energy_j=m.request_energy_j,
                # simulated GPU: share of its recent paced time it waited for the CPU
                gpu_wait_fraction=engine.pacer.wait_fraction() if engine.pacer else None,
            )
        return m.queued + m.in_batch > 0
