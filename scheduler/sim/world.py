"""The simulated world's workloads: what runs on each simulated GPU, and how far it got.

Agents start and stop shards here (through :class:`SimShards`, their shard runner), the
controller's load weights route requests here, and each step the world tells every busy
GPU what it runs, for how long, and books the work and energy:

* a training job's ranks of one generation advance together at the pace of the slowest
  GPU, only while every rank runs (gang); progress is kept across generations (a restarted
  job resumes from its last step); faster GPUs wait, idle, for the rest of the step;
* an inference job's requests go, one by one, to the running replica with the least
  backlog per unit of load weight (a replica weighted 0 is drained: it gets none); they wait
  in the job's backlog while no replica runs; a stopped replica's requests go back to it.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from greenllm.devices import physics
from greenllm.errors import GreenllmError
from greenllm.serving.routing import route_key
from greenllm.serving.slo import RecentLatencies
from greenllm.shard_state import ShardState
from scheduler.sim.arrivals import ArrivalStream
from scheduler.sim.replica import Finished, ReplicaModel, Request
from scheduler.sim.scenario import ScenarioJob

Segments = list[tuple[physics.Workload | None, float]]
GpuKey = tuple[str, int]


@dataclass
class ShardModel:
    """One shard as its agent reports it (the fields of a ``ShardSample``)."""

    shard_id: str
    job_id: str
    rank: int
    generation: int
    node: str
    gpu_index: int
    state: ShardState = ShardState.RUNNING
    error: str | None = None
    work_units: float = 0.0
    steps: int = 0
    requests: int = 0
    offered_units: float = 0.0
    queued_units: float = 0.0
    offered_prompt_tokens: float = 0.0
    queued_prompt_tokens: float = 0.0
    replica: ReplicaModel = field(default_factory=lambda: ReplicaModel(1))
    recent: RecentLatencies = field(default_factory=RecentLatencies)
    extra: dict[str, float] = field(default_factory=dict)

    def finished(self, now_s: float, done: list[Finished]) -> None:
        """Requests it finished by ``now_s``: it reports, as a live replica does, the p99
        latencies of the last :data:`~greenllm.serving.slo.LATENCY_WINDOW_S` and its queue."""
        for f in done:
            self.recent.add(now_s, f.ttft_s, f.tpot_s if f.tokens > 1 else None)
        ttft_p99_s, tpot_p99_s = self.recent.p99(now_s)
        self.extra = {
            "ttft_p99_s": ttft_p99_s,
            "tpot_p99_s": tpot_p99_s,
            "queued_requests": float(len(self.replica.waiting)),
            "oldest_wait_s": self.replica.oldest_wait_s(now_s),
        }


@dataclass
class JobModel:
    """A job's truth.

    Attributes:
        job_id: The controller's id.
        name: Its name in the scenario.
        spec: Its scenario entry.
        submitted_s: When it was submitted, seconds.
        samples_done: Training progress, samples (kept across generations).
        work_units: Work done (samples, or output tokens generated).
        energy_j: Energy of the GPUs while its shards held them, joules.
        offered_output_tokens: Output tokens asked for (inference).
        served_output_tokens: Output tokens decoded (inference).
        running_s: Seconds during which it made progress or served.
        finished_s: When it completed (None: not yet).
        backlog: Requests not routed to a replica (inference).
        finished: TTFT and TPOT of each finished request (inference).
        weights: The controller's load weights, by shard id.
        arrivals: Its request stream (inference).
    """

    job_id: str
    name: str
    spec: ScenarioJob
    submitted_s: float
    samples_done: float = 0.0
    work_units: float = 0.0
    energy_j: float = 0.0
    offered_output_tokens: float = 0.0
    served_output_tokens: float = 0.0
    running_s: float = 0.0
    finished_s: float | None = None
    backlog: deque[Request] = field(default_factory=deque)
    finished: list[Finished] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    arrivals: ArrivalStream | None = None


class World:
    """Every job's truth, and the shards running on each GPU.

    Args:
        base_dir: Folder relative trace files are taken from.
        seed: Seed of the world's random streams (one per job).
    """

    def __init__(self, base_dir: Path, seed: int) -> None:
        self.base_dir = base_dir
        self.seed = seed
        self.jobs: dict[str, JobModel] = {}
        self.on_gpu: dict[GpuKey, ShardModel] = {}
        self.by_node: dict[str, dict[str, ShardModel]] = {}
        self.by_job: dict[str, dict[tuple[str, str], ShardModel]] = {}

    def add_job(
        self, job_id: str, name: str, spec: ScenarioJob, now_s: float, index: int
    ) -> JobModel:
        """A job was submitted (its requests start arriving now)."""
        job = self.jobs[job_id] = JobModel(job_id, name, spec, now_s)
        if spec.kind == "infer":
            infer = spec.infer_settings
            rng = np.random.default_rng([self.seed, 7, index])
            context_tokens = None
            if spec.sim.fit_to_model_context:
                # Imported here: the model registry imports torch, which `greenllm` commands
                # that never simulate must not pay for (seconds per CLI call).
                from greenllm.workloads.models import BUILTINS

                builtin = BUILTINS.get(spec.model)
                context_tokens = builtin.n_positions if builtin is not None else None
            job.arrivals = ArrivalStream(
                infer.load,
                infer.prompt_tokens,
                infer.max_new_tokens,
                self.base_dir,
                rng,
                now_s,
                context_tokens=context_tokens,
            )
        return job

    # -- what agents do ------------------------------------------------------------------
    def start(
        self, node: str, gpu_index: int, shard_id: str, generation: int, spec_json: str
    ) -> None:
        """Start a shard (the agent's StartShard).

        Raises:
            GreenllmError: The GPU runs another shard, or the job is unknown.
        """
        job_id, _, rank = shard_id.rpartition("-")
        if job_id not in self.jobs or not rank.isdigit():
            raise GreenllmError(f"no such job for shard {shard_id!r}")
        json.loads(spec_json)
        shards = self.by_node.setdefault(node, {})
        current = shards.get(shard_id)
        if current is not None and current.generation == generation:
            return
        busy = self.on_gpu.get((node, gpu_index))
        if busy is not None and busy.shard_id != shard_id:
            if busy.state is ShardState.RUNNING:
                raise GreenllmError(f"GPU {gpu_index} of {node} runs shard {busy.shard_id}")
            self.stop(node, busy.shard_id)  # it finished: its GPU is free
        if current is not None:
            self.stop(node, shard_id)
        shard = ShardModel(shard_id, job_id, int(rank), generation, node, gpu_index)
        spec = self.jobs[job_id].spec
        if spec.kind == "infer":
            shard.replica = ReplicaModel(spec.infer_settings.batch_size)
        shards[shard_id] = self.on_gpu[(node, gpu_index)] = shard
        self.by_job.setdefault(job_id, {})[(node, shard_id)] = shard

    def stop(self, node: str, shard_id: str) -> bool:
        """Stop a shard; False when the node runs no such shard."""
        shard = self.by_node.get(node, {}).pop(shard_id, None)
        if shard is None:
            return False
        self.on_gpu.pop((node, shard.gpu_index), None)
        self.by_job.get(shard.job_id, {}).pop((node, shard_id), None)
        job = self.jobs.get(shard.job_id)
        if job is not None:
            job.backlog.extendleft(reversed(shard.replica.take_all()))
        return True

    def set_load_weights(self, weights: dict[str, float]) -> None:
        """Take the controller's load weights (shard id -> weight)."""
        for shard_id, weight in weights.items():
            job = self.jobs.get(shard_id.rpartition("-")[0])
            if job is not None:
                job.weights[shard_id] = weight

    def node_down(self, node: str) -> None:
        """A node crashed: its shards are gone (their queued requests go back to the job)."""
        for shard_id in list(self.by_node.get(node, {})):
            self.stop(node, shard_id)

    def statuses(self, node: str) -> list[ShardModel]:
        """The shards of ``node`` as its agent reports them."""
        shards = list(self.by_node.get(node, {}).values())
        for s in shards:
            s.queued_units = s.replica.waiting_output_tokens()
            s.offered_units = s.replica.offered_units
            s.queued_prompt_tokens = s.replica.backlog_prompt_tokens()
            s.offered_prompt_tokens = s.replica.offered_prompt_tokens
        return shards

    # -- each step -----------------------------------------------------------------------
    def serving(self, job: JobModel, shard: ShardModel) -> bool:
        """An inference replica takes requests (load weight above 0, or none given yet): its
        job holds its GPU. From its drain on, its GPU is the cluster's (as the controller
        books it: :func:`scheduler.shell.jobs.park`)."""
        return job.weights.get(shard.shard_id, 1.0) > 0

    def current_shards(self, job: JobModel) -> list[ShardModel]:
        """The running shards of the job's newest generation, by rank."""
        mine = list(self.by_job.get(job.job_id, {}).values())
        if not mine:
            return []
        newest = max(s.generation for s in mine)
        return sorted((s for s in mine if s.generation == newest), key=lambda s: s.rank)

    def arrive(self, job: JobModel, t0_s: float, dt_s: float, replicas: list[ShardModel]) -> None:
        """Requests arriving in the step go, with the backlog, to the running replicas, as
        the cluster's ingress routes them (:func:`~greenllm.serving.routing.route_key`:
        fewest in flight per unit of load weight; weight 0: drained)."""
        assert job.arrivals is not None
        for req in job.arrivals.take(t0_s, t0_s + dt_s):
            job.offered_output_tokens += req.output_tokens
            job.backlog.append(req)
        live = [r for r in replicas if r.state is ShardState.RUNNING]
        weights = {r.shard_id: job.weights.get(r.shard_id, 0.0) for r in live}
        if live and not any(w > 0 for w in weights.values()):
            weights = dict.fromkeys(weights, 1.0)  # no weights yet: all alike
        live = [r for r in live if weights[r.shard_id] > 0]
        if not live:
            return
        in_flight = {r.shard_id: r.replica.in_flight for r in live}
        while job.backlog:
            req = job.backlog.popleft()
            best = min(
                live,
                key=lambda r: route_key(in_flight[r.shard_id], weights[r.shard_id], r.shard_id),
            )
            best.replica.add(req)
            best.requests += 1
            in_flight[best.shard_id] += 1
