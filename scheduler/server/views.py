"""Read-only views of the state: the ClusterStatus message and per-job measurements."""

from __future__ import annotations

import time
from dataclasses import dataclass

from greenllm.proto.v1 import cluster_pb2
from scheduler.server.jobs import JobRecord, JobTable
from scheduler.server.state import ClusterState


@dataclass(frozen=True)
class JobMeasure:
    """What telemetry says about a job.

    Attributes:
        throughput: Units of work per second, summed over its shards.
        work_units: Units of work done, summed over its shards.
        energy_j: Energy its GPUs used since it was placed, joules.
        steps: Training steps done (the furthest shard's count).
    """

    throughput: float
    work_units: float
    energy_j: float
    steps: int = 0


def measure_job(state: ClusterState, job: JobRecord) -> JobMeasure:
    """Throughput and work from its shards' telemetry, energy from its GPUs' counters; an
    ended job's frozen ledger."""
    if job.final is not None:
        return JobMeasure(0.0, job.final[1], job.final[0])
    throughput = 0.0
    steps = 0
    energy, work = job.carried
    for shard, (node_name, index) in job.gpus.items():
        node = state.nodes[node_name]
        record = node.shards.get(job.shard_id(shard))
        if record is not None and record.latest.generation == job.generation:
            throughput += record.work_rate()
            work += record.latest.work_units
            steps = max(steps, record.latest.steps)
        if index < len(node.gpus) and len(node.gpus[index].energy_window) > 0:
            start_j = job.energy_start_j.get((node_name, index))
            latest_j = node.gpus[index].energy_window[-1][1]
            if start_j is not None and latest_j >= start_j:
                energy += latest_j - start_j
    return JobMeasure(throughput, work, energy, steps)


def job_proto(state: ClusterState, job: JobRecord) -> cluster_pb2.Job:
    """A job with its measurements, for the API."""
    m = measure_job(state, job)
    proto = job.to_proto(m.throughput, m.energy_j, m.work_units)
    proto.steps = m.steps
    proto.restarts = job.restarts
    return proto


def cluster_status(
    state: ClusterState, jobs: JobTable, accounted_w: float
) -> cluster_pb2.ClusterStatus:
    """The whole cluster now.

    Args:
        state: The cluster state.
        jobs: The job table.
        accounted_w: Sum of the limits as the last control step accounted them, watts.
    """
    now_s = state.clock()
    nodes = []
    power_w = 0.0
    for node in state.nodes.values():
        gpus = []
        for g in node.gpus:
            s = g.latest
            pending = g.pending_limit_w()
            gpus.append(
                cluster_pb2.GpuStatus(
                    index=g.index,
                    type=g.gpu_type,
                    power_limit_w=s.power_limit_w if s is not None else g.acked_limit_w,
                    power_w=s.power_w if s is not None else 0.0,
                    sm_clock_mhz=s.sm_clock_mhz if s is not None else 0.0,
                    utilization_pct=s.utilization_pct if s is not None else 0.0,
                    temperature_c=s.temperature_c if s is not None else 0.0,
                    memory_used_mib=s.memory_used_mib if s is not None else 0.0,
                    energy_j=s.energy_j if s is not None else 0.0,
                    commanded_power_limit_w=g.acked_limit_w,
                    pending_power_limit_w=pending if pending is not None else 0.0,
                )
            )
            if s is not None and node.session is not None:
                power_w += s.power_w
        last = node.last_telemetry_s
        nodes.append(
            cluster_pb2.NodeStatus(
                name=node.name,
                connected=node.session is not None,
                stale=state.is_stale(node, now_s),
                failsafe_active=node.failsafe_active,
                gpus=gpus,
                telemetry_age_s=now_s - last if last is not None else -1.0,
            )
        )
    return cluster_pb2.ClusterStatus(
        budget_w=state.budget_w,
        reserve_w=state.reserve_w,
        power_w=power_w,
        accounted_power_limit_w=accounted_w,
        policy=state.policy_name,
        nodes=nodes,
        jobs=[job_proto(state, j) for j in jobs.jobs.values()],
        timestamp_s=time.time(),
        telemetry_samples=state.samples_ingested,
    )
