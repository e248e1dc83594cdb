"""The controller's job table (persisted through :mod:`scheduler.server.persist`)."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field

import grpc

from greenllm.errors import ConfigError
from greenllm.jobspec import JobSpec, parse_job_spec
from greenllm.proto.v1 import cluster_pb2
from scheduler.core.types import JobState
from scheduler.server.errors import BadInput

#: Job states in which it holds (or waits for) GPUs.
ACTIVE_STATES = ("pending", "placed", "running")


@dataclass
class JobRecord:
    """One submitted job.

    Attributes:
        job_id: Controller-assigned id.
        spec: The validated spec.
        spec_json: The spec as submitted (JSON).
        state: pending, placed, running, done, failed or cancelled.
        submitted_at_s: Unix time of submission.
        gpus: Shard index -> (node, GPU index) once placed.
        energy_start_j: (node, GPU index) -> its energy counter when the job was placed
            (None: no reading yet).
        seq: Submission order.
        final: ``(energy_j, work_units)`` frozen when the job ended (None while active).
        generation: Placements so far minus one: a job placed again (after a lost node or a
            failed shard) starts a new generation, whose ranks meet at a fresh rendezvous.
        restarts: Times it was placed again.
        carried: ``(energy_j, work_units)`` of earlier generations.
    """

    job_id: str
    spec: JobSpec
    spec_json: str
    state: str = "pending"
    submitted_at_s: float = field(default_factory=time.time)
    gpus: dict[int, tuple[str, int]] = field(default_factory=dict)
    energy_start_j: dict[tuple[str, int], float | None] = field(default_factory=dict)
    seq: int = 0
    final: tuple[float, float] | None = None
    generation: int = 0
    restarts: int = 0
    carried: tuple[float, float] = (0.0, 0.0)

    def shard_id(self, shard: int) -> str:
        """The id of shard ``shard`` of this job."""
        return f"{self.job_id}-{shard}"

    def job_state(self) -> JobState:
        """This job as ``decide()`` sees it (a placed job counts as running)."""
        spec = self.spec
        return JobState(
            job_id=self.job_id,
            kind=spec.kind,
            phase="pending" if self.state == "pending" else "running",
            workload=spec.workload(),
            shards=spec.shards,
            priority=float(spec.priority),
            allowed_gpu_types=tuple(spec.gpu_types),
            preferred_gpu_types=tuple(spec.preferred_gpu_types),
            slo_units_per_s=spec.slo.min_throughput,
            floor_w=spec.floor_w,
        )

    def to_proto(self, throughput: float, energy_j: float, work_units: float) -> cluster_pb2.Job:
        """The job on the wire, with its measured throughput and energy."""
        s = self.spec
        summary = cluster_pb2.JobSpec(
            name=s.name,
            kind=s.kind,
            model=s.model,
            priority=s.priority,
            shards=s.shards,
            gpu_types=s.gpu_types,
            min_throughput=s.slo.min_throughput,
            deadline_s=s.slo.deadline_s,
            spec_json=self.spec_json,
        )
        return cluster_pb2.Job(
            id=self.job_id,
            spec=summary,
            state=self.state,
            throughput=throughput,
            energy_j=energy_j,
            work_units=work_units,
            submitted_at_s=self.submitted_at_s,
        )


class JobTable:
    """Jobs by id, in submission order."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self._ids = itertools.count(1)

    def restore(self, jobs: list[JobRecord]) -> None:
        """Take back jobs reloaded after a restart (ids continue after the highest seq)."""
        for job in sorted(jobs, key=lambda j: j.seq):
            self.jobs[job.job_id] = job
        self._ids = itertools.count(max((j.seq for j in jobs), default=0) + 1)

    def submit(self, spec_json: str) -> JobRecord:
        """Validate and add a job.

        Raises:
            BadInput: INVALID_ARGUMENT naming the field that is wrong.
        """
        try:
            data = json.loads(spec_json)
        except ValueError as exc:
            raise BadInput(grpc.StatusCode.INVALID_ARGUMENT, f"job spec: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadInput(grpc.StatusCode.INVALID_ARGUMENT, "job spec: expected a mapping")
        try:
            spec = parse_job_spec(data, "job spec")
        except ConfigError as exc:
            raise BadInput(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        seq = next(self._ids)
        job_id = f"{spec.name}-{seq}"
        record = self.jobs[job_id] = JobRecord(job_id, spec, spec_json, seq=seq)
        return record

    def get(self, job_id: str) -> JobRecord:
        """The job with that id.

        Raises:
            BadInput: NOT_FOUND.
        """
        job = self.jobs.get(job_id)
        if job is None:
            raise BadInput(grpc.StatusCode.NOT_FOUND, f"no job {job_id!r}")
        return job

    def active(self) -> list[JobRecord]:
        """Jobs pending, placed or running."""
        return [j for j in self.jobs.values() if j.state in ACTIVE_STATES]

    def assignments(self) -> dict[tuple[str, int], tuple[str, int]]:
        """(node, GPU index) -> (job id, shard) for every placed shard of an active job."""
        return {gpu: (j.job_id, shard) for j in self.active() for shard, gpu in j.gpus.items()}
