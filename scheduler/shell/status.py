"""Read-only views for the API: cluster status, jobs (paged), a job's event log.

Status stays bounded however many jobs wait or ran: it counts every job by phase
(``jobs_by_phase``) and lists at most :data:`STATUS_JOBS_CAP` of them, without their specs:
running first, then placed, pending (each in submission order), then the most recently
ended; ``jobs_truncated`` says when some were left out (``GetJob`` has a job's spec;
``ListJobs`` pages through every job).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc
import numpy as np

from greenllm.proto.v1 import agent_pb2, cluster_pb2
from scheduler.core.types import GPUState
from scheduler.shell.errors import BadInput
from scheduler.shell.idle import releasable
from scheduler.shell.jobs import JobRecord, measure_job, restored_job
from scheduler.shell.nodes import NodeRecord
from scheduler.shell.ports import StoredEvent, StoredJob, StoreError
from scheduler.shell.shortfall import above_plan, shortfall_now_w

if TYPE_CHECKING:
    from scheduler.shell.controller import ControllerShell

#: Jobs per ListJobs page by default, and at most.
PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000
#: Jobs status lists at most.
STATUS_JOBS_CAP = 100
#: Order of the jobs status lists: by phase, ended ones last.
_LIST_ORDER = {"running": 0, "placed": 1, "pending": 2}
#: Events per GetJobEvents by default, and at most.
EVENTS, MAX_EVENTS = 200, 10_000
_JOB_PHASES = {
    p.name.removeprefix("JOB_PHASE_").lower(): p.number
    for p in cluster_pb2.JobPhase.DESCRIPTOR.values
}
_NODE_PHASES = {
    p.name.removeprefix("NODE_PHASE_").lower(): p.number
    for p in cluster_pb2.NodePhase.DESCRIPTOR.values
}


def node_phase(node: NodeRecord) -> int:
    """The node's phase as the API's enum value."""
    return _NODE_PHASES[node.phase.value]


def job_proto(shell: ControllerShell, job: JobRecord, with_spec: bool = False) -> cluster_pb2.Job:
    """A job with its measurements (its whole spec only when ``with_spec``)."""
    m = measure_job(shell.nodes, job)
    s = job.spec
    summary = cluster_pb2.JobSpec(
        name=s.name,
        kind=s.kind,
        model=s.model,
        priority=s.priority,
        shards=s.shards,
        gpu_types=s.gpu_types,
        min_throughput=s.slo.min_throughput,
        deadline_s=s.slo.deadline_s,
        spec_json=job.spec_json if with_spec else "",
    )
    out = cluster_pb2.Job(
        id=job.job_id,
        spec=summary,
        state=job.phase.value,
        phase=_JOB_PHASES[job.phase.value],  # type: ignore[arg-type]
        reason=job.reason,
        throughput=m.throughput or 0.0,
        energy_j=m.energy_j,
        work_units=m.work_units,
        submitted_at_s=job.submitted_at_s,
        steps=m.steps,
        restarts=job.restarts,
        ended_at_s=job.ended_at_s,
    )
    if m.gpu_wait_fraction is not None:  # shards on simulated GPUs say how long they waited
        out.gpu_wait_fraction = m.gpu_wait_fraction
        out.cpu_bound = job.cpu_bound
    if s.kind == "infer" and job.phase.active:
        _serving(shell, job, out)
    return out


def _serving(shell: ControllerShell, job: JobRecord, out: cluster_pb2.Job) -> None:
    """An active inference job's endpoint, replicas and request figures (from its
    replicas' latest reports). Its idle energy is what its replicas drew with no request
    in flight, what its GPUs drew from its placement until its replicas started, and what
    they drew since the replicas last booked their energy; not what a drained (parked)
    replica's GPU drew, which is the cluster's."""
    if shell.ingress_url:
        out.endpoint = f"{shell.ingress_url}/jobs/{job.job_id}/v1"
    weights = shell.weights_sent.get(job.job_id, ({}, set()))[0]
    for shard in sorted(job.shards.values(), key=lambda x: x.rank):
        node = shell.nodes.get(shard.node)
        report = node.shards.get(shard.shard_id) if node is not None else None
        latest = report.latest if report is not None else None
        if latest is not None and latest.generation != job.generation:
            latest = None
        replica = cluster_pb2.Replica(
            shard_id=shard.shard_id,
            node=shard.node,
            gpu_index=shard.index,
            endpoint=latest.endpoint if latest is not None else "",
            load_weight=weights.get(shard.shard_id, 0.0),
            state=shard.phase.value,
        )
        if latest is not None and latest.HasField("engine_metrics"):  # vLLM's own figures
            replica.engine_metrics.CopyFrom(latest.engine_metrics)
        out.replicas.append(replica)
        if latest is not None:
            out.ttft_p99_s = max(out.ttft_p99_s, latest.ttft_p99_s)
            out.tpot_p99_s = max(out.tpot_p99_s, latest.tpot_p99_s)
            out.queued_requests += latest.queued_requests
            out.rejected_requests += latest.rejected_requests
            out.idle_energy_j += latest.idle_energy_j
            held_from_j = job.energy_start_j.get((shard.node, shard.index))
            gpu = (
                node.gpus[shard.index]
                if node is not None and shard.index < len(node.gpus)
                else None
            )
            started_j = gpu.booked_of(latest.start_energy_j) if gpu is not None else 0.0
            if held_from_j is not None and latest.start_energy_j > 0 and started_j >= held_from_j:
                out.idle_energy_j += started_j - held_from_j  # placed, not yet run
            if node is not None:
                out.idle_energy_j += _unbooked_j(node, shard.index, latest)
    # what parked replicas drew is the cluster's idle energy, not the job's
    out.idle_energy_j -= job.parked_j + job.parked_now_j(shell.nodes)
    out.idle_energy_j = max(0.0, out.idle_energy_j)


def _unbooked_j(node: NodeRecord, index: int, latest: agent_pb2.ShardSample) -> float:
    """Energy a replica's GPU drew after the replica last booked its energy, up to the
    GPU's newest reading (negative when the booking is newer than the reading): it goes to
    no request yet, so it counts as idle, and the job's books close at the reading."""
    gpu = node.gpus[index] if index < len(node.gpus) else None
    counter_j = gpu.energy_j() if gpu is not None else None
    if gpu is None or counter_j is None or latest.booked_energy_counter_j <= 0:
        return 0.0
    return counter_j - gpu.booked_of(latest.booked_energy_counter_j)


def cluster_status(shell: ControllerShell) -> cluster_pb2.ClusterStatus:
    """The whole cluster now (bounded: active and recently ended jobs, no specs)."""
    now_s = shell.clock()
    observed = shell.observed(now_s)
    listed = listed_jobs(shell)
    accounted_w = sum(g.accounted_limit_w for g in observed.gpus)
    held = shell.held_gpus(observed)
    states = {g.key: g for g in observed.gpus}
    nodes = []
    power_w = 0.0
    for node in shell.nodes.values():
        gpus = []
        for g in node.gpus:
            r = g.latest
            pending = g.pending_limit_w()
            state = states.get((node.name, g.index))
            over_w, why = above_plan(shell, state) if state is not None else (0.0, "")
            gpus.append(
                cluster_pb2.GpuStatus(
                    index=g.index,
                    type=g.gpu_type,
                    power_limit_w=r.power_limit_w if r is not None else g.acked_limit_w,
                    power_w=r.power_w if r is not None else 0.0,
                    sm_clock_mhz=r.sm_clock_mhz if r is not None else 0.0,
                    utilization_pct=r.utilization_pct if r is not None else 0.0,
                    temperature_c=r.temperature_c if r is not None else 0.0,
                    memory_used_mib=r.memory_used_mib if r is not None else 0.0,
                    energy_j=r.energy_j if r is not None else 0.0,
                    commanded_power_limit_w=g.acked_limit_w,
                    pending_power_limit_w=pending if pending is not None else 0.0,
                    planned_power_limit_w=g.asked_w or 0.0,
                    above_plan_w=over_w,
                    above_plan_reason=why,
                )
            )
            if r is not None and node.session is not None:
                power_w += max(0.0, r.power_w)
        last = node.last_telemetry_s
        nodes.append(
            cluster_pb2.NodeStatus(
                name=node.name,
                connected=node.session is not None,
                stale=not node.fresh(shell.listen_now()) or last is None,
                failsafe_active=node.failsafe_active,
                gpus=gpus,
                telemetry_age_s=now_s - last if last is not None else -1.0,
                phase=node_phase(node),  # type: ignore[arg-type]
                down_reason=node.down_reason,
                idle_energy_j=shell.idle.by_node_j.get(node.name, 0.0),
                releasable=releasable(node, held),
                agent_state_error=node.agent_state_error,
                energy_samples_rejected=node.energy_rejected,
            )
        )
    store_error = shell.persist.error
    steps = np.array(shell.step_wall_s) if shell.step_wall_s else np.zeros(1)
    return cluster_pb2.ClusterStatus(
        budget_w=shell.budget_w,
        reserve_w=shell.reserve_w,
        power_w=power_w,
        accounted_power_limit_w=accounted_w,
        policy=shell.policy_name,
        nodes=nodes,
        jobs=[job_proto(shell, j) for j in listed],
        timestamp_s=shell.wall_clock(),
        telemetry_samples=shell.ledger.samples_ingested,
        jobs_total=shell.jobs.last_seq,
        state_writable=store_error is None,
        state_error=store_error or "",
        refused_lowerings=shell.refused_lowerings,
        control_step_p50_s=float(np.percentile(steps, 50)),
        control_step_p99_s=float(np.percentile(steps, 99)),
        jobs_by_phase=jobs_by_phase(shell),
        jobs_truncated=len(listed) < len(shell.jobs.jobs),
        jobs_cap=STATUS_JOBS_CAP,
        shortfall_w=shortfall_now_w(shell, observed.gpus),
        jobs_waiting=shell.jobs.waiting,
        max_waiting_jobs=shell.config.controller.max_waiting_jobs,
        domains=domain_statuses(shell, observed.gpus),
    )


def domain_statuses(
    shell: ControllerShell, gpus: Sequence[GPUState]
) -> list[cluster_pb2.DomainStatus]:
    """Each power domain: its limit, what its GPUs hold (as accounted) and draw, whether
    it binds."""
    layout = shell.layout
    if not layout.names:
        return []
    size = len(layout.names)
    held_w, power_w, count = [0.0] * size, [0.0] * size, [0] * size
    for g in gpus:
        for at in layout.chain(g.node):
            held_w[at] += g.accounted_limit_w
            power_w[at] += g.power_w
            count[at] += 1
    bound = set(shell.last_actions.bound_domains)
    out = []
    for at, name in enumerate(layout.names):
        limit_w, reserve_w = shell.domain_limits_w[name]
        parent = layout.parent[at]
        out.append(
            cluster_pb2.DomainStatus(
                name=name,
                parent=layout.names[parent] if parent >= 0 else "",
                limit_w=limit_w,
                reserve_w=reserve_w,
                accounted_power_limit_w=held_w[at],
                power_w=power_w[at],
                bound=name in bound,
                gpus=count[at],
            )
        )
    return out


def listed_jobs(shell: ControllerShell) -> list[JobRecord]:
    """The jobs status lists: at most :data:`STATUS_JOBS_CAP`, running first, then placed
    and pending (in submission order), then the most recently ended."""
    held = list(shell.jobs.jobs.values())
    active = sorted((j for j in held if j.phase.active), key=lambda j: _LIST_ORDER[j.phase.value])
    ended = sorted((j for j in held if not j.phase.active), key=lambda j: -j.seq)
    return (active + ended)[:STATUS_JOBS_CAP]


def jobs_by_phase(shell: ControllerShell) -> dict[str, int]:
    """Every job ever submitted by phase: those the controller holds as it holds them, the
    others (ended) as its store has them."""
    held = shell.jobs.jobs.values()
    counts: dict[str, int] = {}
    for job in held:
        counts[job.phase.value] = counts.get(job.phase.value, 0) + 1
    try:
        stored = shell.persist.store.ended_counts({j.job_id for j in held})
    except StoreError:
        stored = {}
    for phase, n in stored.items():
        counts[phase] = counts.get(phase, 0) + n
    return counts


def list_jobs(
    shell: ControllerShell, page_size: int, page_token: str
) -> cluster_pb2.ListJobsResponse:
    """One page of every job ever submitted, newest first.

    Raises:
        BadInput: INVALID_ARGUMENT for a malformed page token.
    """
    size = min(page_size or PAGE_SIZE, MAX_PAGE_SIZE)
    if page_token and not (page_token.isdigit() and len(page_token) < 12):
        raise BadInput(grpc.StatusCode.INVALID_ARGUMENT, "page_token: not one this API gave")
    offset = int(page_token or 0)
    stored, total = shell.persist.store.jobs_page(offset, size)
    jobs = [_job_of(shell, s) for s in stored]
    token = str(offset + size) if offset + size < total else ""
    return cluster_pb2.ListJobsResponse(jobs=jobs, next_page_token=token, total=total)


def _job_of(shell: ControllerShell, stored: StoredJob) -> cluster_pb2.Job:
    live = shell.job(stored.job_id)
    if live is not None:
        return job_proto(shell, live)
    try:
        return job_proto(shell, restored_job(stored, shell.clock(), shell.wall_clock()))
    except ValueError:
        return cluster_pb2.Job(id=stored.job_id, state=stored.phase, reason="spec unreadable")


def job_events(shell: ControllerShell, job_id: str, limit: int) -> list[StoredEvent]:
    """A job's event log, oldest first (its newest ``limit`` events)."""
    return shell.persist.store.events(job_id, min(limit or EVENTS, MAX_EVENTS))
