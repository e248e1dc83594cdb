"""Applying ``reconcile()``: the shell's records move through the lifecycle tables.

:func:`reconcile_step` builds the pure core's view from the records, calls
:func:`scheduler.core.reconcile.reconcile`, and applies every transition it returns: node
and shard phases, jobs that finish, fail, or are placed again as a new generation (their
shards stopped, their ledger carried). Every transition becomes an event in the store: the
persisted transitions are each job's event log.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from greenllm.proto.v1 import agent_pb2
from greenllm.shard_state import ShardState, reported_state
from scheduler.core.lifecycle import (
    JOB_TRANSITIONS,
    SHARD_TRANSITIONS,
    JobEvent,
    JobPhase,
    NodePhase,
    ShardEvent,
    ShardPhase,
    allows,
    next_phase,
)
from scheduler.core.reconcile import (
    REPORTED_RUNNING,
    JobView,
    LifecycleView,
    NodeView,
    ReportedShard,
    ShardView,
    Transition,
    reconcile,
)
from scheduler.shell.jobs import JobRecord, ShardRecord, measure_job
from scheduler.shell.ports import StoredEvent

if TYPE_CHECKING:
    from scheduler.shell.controller import ControllerShell

log = logging.getLogger(__name__)

#: Times a job is placed again after a failure before it fails.
MAX_RESTARTS = 3
#: A shard a node runs unknown to the controller is told to stop at most this often, s.
ORPHAN_STOP_EVERY_S = 10.0
_RUNNING, _LIVE = ShardPhase.RUNNING, NodePhase.LIVE


def _shard_view(shell: ControllerShell, s: ShardRecord) -> ShardView:
    report = shell.nodes[s.node].shards.get(s.shard_id)
    reported, error, progressed = None, "", False
    if report is not None and report.latest.generation == s.generation:
        reported = reported_state(report.latest)
        error = report.latest.error
        progressed = reported == REPORTED_RUNNING
    return ShardView(
        s.job_id,
        s.rank,
        s.generation,
        s.node,
        s.phase,
        s.since_s,
        s.ack,
        reported,
        error,
        progressed,
    )


def _steady(shell: ControllerShell, s: ShardRecord) -> bool:
    """Nothing can happen to the shard now: it runs, on a live node, which says it runs."""
    if s.phase is not _RUNNING or shell.nodes[s.node].phase is not _LIVE:
        return False
    report = shell.nodes[s.node].shards.get(s.shard_id)
    latest = report.latest if report is not None else None
    return (
        latest is not None
        and latest.generation == s.generation
        and reported_state(latest) is ShardState.RUNNING
    )


def _view(shell: ControllerShell, now_s: float) -> LifecycleView:
    listen_s = shell.listen_now()
    nodes = tuple(
        NodeView(n.name, n.phase, n.phase_since_s, n.fresh(listen_s), n.down_reason)
        for n in shell.nodes.values()
    )
    jobs = []
    records = list(shell.stopping.values())
    known = {(s.shard_id, s.generation) for s in records}
    for j in shell.jobs.busy():  # one waiting with no shard: nothing for reconcile() to do
        listed = [s for s in j.shards.values() if not _steady(shell, s)]
        records.extend(listed)
        known.update((s.shard_id, s.generation) for s in j.shards.values())
        steady = len(j.shards) - len(listed)
        jobs.append(JobView(j.job_id, j.phase, j.phase_since_s, j.generation, j.restarts, steady))
    # only what the controller does not run itself: reconcile() stops what of it runs
    reported = tuple(
        ReportedShard(n.name, sid, r.latest.generation, reported_state(r.latest))
        for n in shell.nodes.values()
        if n.session is not None
        for sid, r in n.shards.items()
        if (sid, r.latest.generation) not in known
    )
    return LifecycleView(
        nodes=nodes,
        jobs=tuple(jobs),
        shards=tuple(_shard_view(shell, s) for s in records),
        reported=reported,
        timeouts=shell.timeouts,
        max_restarts=MAX_RESTARTS,
        nodes_now_s=listen_s,
    )


def _event(shell: ControllerShell, t: Transition) -> None:
    key = t.key if isinstance(t.key, str) else "/".join(str(k) for k in t.key)  # type: ignore[attr-defined]
    what = {"job": f"job {key}", "shard": f"shard {key}", "node": f"node {key}"}[t.kind]
    shell.persist.event(
        StoredEvent(
            shell.wall_clock(),
            t.job_id,
            str(t.new.value),
            f"{what} {t.new.value}: {t.reason}",
            t.kind,
            key,
            str(t.old.value),
        )
    )


def reconcile_step(shell: ControllerShell, now_s: float) -> None:
    """Run ``reconcile()`` over the shell's records and apply its answer."""
    result = reconcile(_view(shell, now_s), now_s)
    shards: dict[tuple[str, int, int], ShardRecord] = dict(shell.stopping)
    for job in shell.jobs.busy():
        for s in job.shards.values():
            shards[s.key] = s
    for t in result.transitions:
        _event(shell, t)
        if t.kind == "node":
            node = shell.nodes[str(t.key)]
            node.phase, node.phase_since_s = NodePhase(t.new.value), shell.listen_now()
            if node.phase is NodePhase.LOST:
                log.warning("node %s lost: %s", node.name, t.reason)
            elif node.phase is NodePhase.STALE and node.session is not None:
                # a stream that carries no telemetry is ended, so the agent's fail-safe
                # timer runs from here: by the time the node is lost, it has failed safe
                session = node.session
                session.close(f"no telemetry for {node.stale_after_s:g} s")
                shell.ledger.disconnect(session)
        elif t.kind == "shard":
            record = shards[t.key]  # type: ignore[index]
            record.phase, record.since_s = ShardPhase(t.new.value), now_s
        else:
            job = shell.jobs.jobs[str(t.key)]
            _job_transition(shell, job, JobEvent(t.event.value), t.reason, now_s)
    for stop in result.stops:
        _stop(shell, stop.node, stop.shard_id, stop.generation, now_s)
    for key in [k for k, s in shell.stopping.items() if s.phase.ended]:
        del shell.stopping[key]


def _stop(shell: ControllerShell, node: str, shard_id: str, generation: int, now_s: float) -> None:
    last = shell.orphan_stops.get((node, shard_id, generation))
    if last is not None and now_s - last < ORPHAN_STOP_EVERY_S:
        return
    shell.orphan_stops[(node, shard_id, generation)] = now_s
    body = agent_pb2.StopShard(shard_id=shard_id)
    shell.queue(node, agent_pb2.Command(stop_shard=body), now_s)


def _job_transition(
    shell: ControllerShell, job: JobRecord, event: JobEvent, reason: str, now_s: float
) -> None:
    new = JobPhase(next_phase(JOB_TRANSITIONS, job.phase, event))
    if event is JobEvent.RESTART:
        measure = measure_job(shell.nodes, job)
        job.carried = (measure.energy_j, measure.work_units)
        job.reason = reason
        _retire_shards(shell, job)
        job.energy_start_j.clear()
        job.parked_since_j.clear()
        job.active_replicas = None
        job.generation += 1
        job.restarts += 1
        log.warning("job %s: %s", job.job_id, reason)
    elif not new.active:
        end(shell, job, new, reason)
        return
    job.phase, job.phase_since_s, job.reason = new, now_s, reason
    shell.persist.dirty(job)


def _retire_shards(shell: ControllerShell, job: JobRecord) -> None:
    """Stop what of the job's current shards still runs (reconcile() stopped those it listed;
    the steady ones are stopped here), and keep them until they have stopped."""
    now_s = shell.clock()
    for s in job.shards.values():
        if allows(SHARD_TRANSITIONS, s.phase, ShardEvent.STOP):
            old = s.phase
            s.phase, s.since_s = ShardPhase(SHARD_TRANSITIONS[(old, ShardEvent.STOP)]), now_s
            _stop(shell, s.node, s.shard_id, s.generation, now_s)
            shell.persist.event(
                StoredEvent(
                    shell.wall_clock(),
                    job.job_id,
                    str(s.phase),
                    f"shard {s.job_id}/{s.generation}/{s.rank} stopping: {job.reason}",
                    "shard",
                    f"{s.job_id}/{s.generation}/{s.rank}",
                    str(old),
                )
            )
        if not s.phase.ended:
            shell.stopping[s.key] = s
    job.shards = {}


def end(shell: ControllerShell, job: JobRecord, phase: JobPhase, reason: str) -> None:
    """End a job: freeze its ledger, stop what of it still runs, free its GPUs."""
    now_s = shell.clock()
    measure = measure_job(shell.nodes, job)
    job.final = (measure.energy_j, measure.work_units)
    job.reason = reason
    _retire_shards(shell, job)
    job.phase, job.phase_since_s = phase, now_s
    job.ended_at_s = shell.wall_clock()
    log.info("job %s %s: %s", job.job_id, phase.value, reason)
    shell.persist.dirty(job)
    shell.wake()


def start_acked(shell: ControllerShell, command_id: int, outcome: str) -> None:
    """Note the outcome of a StartShard ("" applied, else the refusal) on its shard."""
    shard = shell.start_commands.pop(command_id, None)
    if shard is not None:
        shard.ack = outcome
        shell.wake()
