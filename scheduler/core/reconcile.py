"""``reconcile(observed, now) -> Reconciliation``: lifecycle transitions from what was observed.

Pure, like :func:`scheduler.core.decide.decide`: no I/O, no clock. The shell gathers what
it has seen since the last step (acks of StartShard, shard reports from telemetry, node
contact) into :class:`LifecycleView` and applies what comes back: phase changes (each one
a row of a table in :mod:`scheduler.core.lifecycle`, persisted as the event log) and shard
stops to send. Placement is ``decide()``'s; everything that happens to a job afterwards is
decided here:

* nodes go stale when their telemetry stops, lost when it stays away past the timeout;
* a shard fails when its start is refused, it crashes, it times out, or its node is lost;
* a job whose shard failed is placed again whole (a new generation: synchronous training
  restarts from its checkpoint), and failed after ``max_restarts``;
* a placed job runs once any shard reports progress, is done once every shard is, and is
  placed again when no shard reported within the placed timeout;
* a shard a node reports that the controller does not run (an earlier generation, a
  cancelled job) is stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from greenllm.shard_state import ShardState
from scheduler.core.lifecycle import (
    JOB_TRANSITIONS,
    NODE_TRANSITIONS,
    SHARD_TRANSITIONS,
    JobEvent,
    JobPhase,
    NodeEvent,
    NodePhase,
    ShardEvent,
    ShardPhase,
    Timeouts,
    allows,
)

#: Shard states an agent reports (ShardSample.phase / .state).
REPORTED_RUNNING, REPORTED_DONE, REPORTED_FAILED, REPORTED_STOPPED = (
    ShardState.RUNNING,
    ShardState.DONE,
    ShardState.FAILED,
    ShardState.STOPPED,
)


class NodeView(NamedTuple):
    """A node as the shell sees it.

    Attributes:
        name: Node name.
        phase: Its phase now.
        since_s: When it entered that phase, seconds.
        fresh: Connected with telemetry younger than its stale timeout.
        down: Why it is known powered off ("" when it is not known to be).
    """

    name: str
    phase: NodePhase
    since_s: float
    fresh: bool
    down: str = ""


class ShardView(NamedTuple):
    """One shard record.

    Attributes:
        job_id: Its job.
        rank: Its rank (training) or replica number (inference).
        generation: The job generation it was started for.
        node: Node it runs on.
        phase: Its phase now.
        since_s: When it entered that phase, seconds.
        ack: Outcome of its StartShard: None (no ack yet), "" (applied) or the refusal.
        reported: The latest state its node reported for it (None: nothing yet).
        error: Why it failed, as reported.
        progressed: Its node reported work done by it (or the running state).
    """

    job_id: str
    rank: int
    generation: int
    node: str
    phase: ShardPhase
    since_s: float
    ack: str | None = None
    reported: str | None = None
    error: str = ""
    progressed: bool = False

    @property
    def key(self) -> tuple[str, int, int]:
        """``(job_id, generation, rank)``."""
        return (self.job_id, self.generation, self.rank)


class JobView(NamedTuple):
    """One active job.

    Attributes:
        job_id: Its id.
        phase: Its phase now.
        since_s: When it entered that phase, seconds.
        generation: Its current placement generation.
        restarts: Times it was placed again so far.
        steady: Shards of its current generation left out of the view because nothing can
            change for them now (running, on a live node, reporting that they run): they
            count as running. The caller stops them too when the job restarts or ends.
    """

    job_id: str
    phase: JobPhase
    since_s: float
    generation: int
    restarts: int
    steady: int = 0


class ReportedShard(NamedTuple):
    """A shard a node says it runs.

    Attributes:
        node: The node.
        shard_id: Its id.
        generation: Its generation.
        state: The reported state.
    """

    node: str
    shard_id: str
    generation: int
    state: str


@dataclass(frozen=True)
class LifecycleView:
    """What :func:`reconcile` looks at.

    Attributes:
        nodes: Every node.
        jobs: Every active job.
        shards: Every shard record not yet ended, and the ended ones of active jobs' current
            generations.
        reported: Shards the nodes report running.
        timeouts: State timeouts.
        max_restarts: Times a job is placed again before it fails.
        nodes_now_s: The time nodes' phases are timed in (default: ``now_s``): the shell
            times node contact in its listening time.
    """

    nodes: tuple[NodeView, ...]
    jobs: tuple[JobView, ...]
    shards: tuple[ShardView, ...]
    reported: tuple[ReportedShard, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_restarts: int = 3
    nodes_now_s: float | None = None


class Transition(NamedTuple):
    """One phase change.

    Attributes:
        kind: ``job``, ``shard`` or ``node``.
        key: The record: a job id, ``(job_id, generation, rank)``, or a node name.
        job_id: The job concerned (None for nodes).
        old: Phase before.
        new: Phase after.
        event: What caused it.
        reason: Why, in words (for the event log).
    """

    kind: str
    key: object
    job_id: str | None
    old: Enum
    new: Enum
    event: Enum
    reason: str


class StopShard(NamedTuple):
    """Stop shard ``shard_id`` (of ``generation``) on ``node``."""

    node: str
    shard_id: str
    generation: int


@dataclass(frozen=True)
class Reconciliation:
    """What :func:`reconcile` asks the shell to do.

    Attributes:
        transitions: Phase changes, in the order they happened.
        stops: Shards to stop.
    """

    transitions: tuple[Transition, ...] = ()
    stops: tuple[StopShard, ...] = ()


def shard_id(job_id: str, rank: int) -> str:
    """The id of rank ``rank`` of ``job_id`` (the agents' key for a shard)."""
    return f"{job_id}-{rank}"


class _Builder:
    def __init__(self, timeouts: Timeouts, now_s: float) -> None:
        self.timeouts = timeouts
        self.now_s = now_s
        self.transitions: list[Transition] = []
        self.stops: list[StopShard] = []

    def expired(self, since_s: float, limit_s: float) -> bool:
        return math.isfinite(limit_s) and self.now_s - since_s >= limit_s


def _nodes(view: LifecycleView, b: _Builder) -> dict[str, NodePhase]:
    phases: dict[str, NodePhase] = {}
    for node in view.nodes:
        phase = node.phase
        events: list[tuple[NodeEvent, str]] = []
        if node.fresh and phase is NodePhase.STALE:
            events.append((NodeEvent.TELEMETRY, "telemetry again"))
        elif not node.fresh and phase is NodePhase.LIVE:
            events.append((NodeEvent.SILENT, "no telemetry"))
        elif not node.fresh and node.down and phase is not NodePhase.LOST:
            events.append((NodeEvent.DOWN, f"down: {node.down}"))
        elif not node.fresh and b.expired(node.since_s, b.timeouts.node(phase)):
            what = (
                "not heard from since the controller started"
                if phase is NodePhase.UNKNOWN
                else "silent"
            )
            events.append((NodeEvent.TIMEOUT, f"{what} for {b.timeouts.node(phase):g} s"))
        for event, reason in events:
            if allows(NODE_TRANSITIONS, phase, event):
                new = NODE_TRANSITIONS[(phase, event)]
                b.transitions.append(Transition("node", node.name, None, phase, new, event, reason))
                phase = new
        phases[node.name] = phase
    return phases


def _shard_events(s: ShardView, lost: bool, b: _Builder) -> list[tuple[ShardEvent, str]]:
    events: list[tuple[ShardEvent, str]] = []
    if s.ack is not None and s.ack != "":
        events.append((ShardEvent.REFUSED, f"start refused: {s.ack}"))
    elif s.ack == "":
        events.append((ShardEvent.ACKED, "started"))
    if s.reported == REPORTED_FAILED:
        events.append((ShardEvent.CRASHED, f"failed: {s.error or 'no reason given'}"))
    elif s.reported == REPORTED_DONE:
        events.append((ShardEvent.FINISHED, "finished its work"))
    elif s.reported == REPORTED_STOPPED:
        events.append((ShardEvent.STOPPED, "stopped"))
    elif s.progressed:
        events.append((ShardEvent.PROGRESS, "reporting progress"))
    if lost:
        events.append((ShardEvent.NODE_LOST, f"node {s.node} lost"))
    limit_s = b.timeouts.shard(s.phase)
    if b.expired(s.since_s, limit_s):
        events.append((ShardEvent.TIMEOUT, f"{s.phase.value} for {limit_s:g} s"))
    return events


def _shards(
    view: LifecycleView, node_phase: dict[str, NodePhase], b: _Builder
) -> dict[tuple[str, int, int], tuple[ShardPhase, str]]:
    """New phase (and the reason of its last change) of every shard."""
    out: dict[tuple[str, int, int], tuple[ShardPhase, str]] = {}
    for s in view.shards:
        phase, why = s.phase, ""
        lost = node_phase.get(s.node) is NodePhase.LOST
        for event, reason in _shard_events(s, lost, b):
            if not allows(SHARD_TRANSITIONS, phase, event):
                continue
            new = SHARD_TRANSITIONS[(phase, event)]
            b.transitions.append(Transition("shard", s.key, s.job_id, phase, new, event, reason))
            phase, why = new, reason
        out[s.key] = (phase, why)
    return out


def _stop(s: ShardView, phase: ShardPhase, reason: str, b: _Builder) -> ShardPhase:
    if not allows(SHARD_TRANSITIONS, phase, ShardEvent.STOP):
        return phase
    new = SHARD_TRANSITIONS[(phase, ShardEvent.STOP)]
    b.transitions.append(Transition("shard", s.key, s.job_id, phase, new, ShardEvent.STOP, reason))
    b.stops.append(StopShard(s.node, shard_id(s.job_id, s.rank), s.generation))
    return new


def _job(
    view: LifecycleView, job: JobView, shards: list[tuple[ShardView, ShardPhase, str]], b: _Builder
) -> None:
    current = [(s, p, why) for s, p, why in shards if s.generation == job.generation]
    failed = [(s, why) for s, p, why in current if p is ShardPhase.FAILED]
    event: JobEvent | None = None
    reason = ""
    if failed:
        s, why = failed[0]
        reason = f"shard {s.rank} on {s.node}: {why}"
    elif job.phase is JobPhase.PLACED and b.expired(job.since_s, b.timeouts.job(job.phase)):
        reason = f"no shard reported progress within {b.timeouts.job(job.phase):g} s"
    if reason:
        if job.restarts >= view.max_restarts:
            event, reason = JobEvent.GIVE_UP, f"{reason} (after {job.restarts} restarts)"
        else:
            event, reason = JobEvent.RESTART, f"{reason}; placing it again"
        for s, p, _ in current:
            _stop(s, p, f"job {job.job_id}: {reason}", b)
    elif current and not job.steady and all(p is ShardPhase.DONE for _, p, _ in current):
        event, reason = JobEvent.ALL_DONE, "every shard finished"
    elif job.phase is JobPhase.PLACED and (
        job.steady or any(p is ShardPhase.RUNNING for _, p, _ in current)
    ):
        event, reason = JobEvent.PROGRESS, "shards report progress"
    if event is not None and allows(JOB_TRANSITIONS, job.phase, event):
        new = JOB_TRANSITIONS[(job.phase, event)]
        b.transitions.append(
            Transition("job", job.job_id, job.job_id, job.phase, new, event, reason)
        )


def reconcile(view: LifecycleView, now_s: float) -> Reconciliation:
    """Phase changes and shard stops that follow from ``view`` at ``now_s``.

    Args:
        view: Nodes, active jobs, their shards and what the nodes report.
        now_s: The time now, seconds (the same clock as every ``since_s``).

    Returns:
        The transitions (in order) and the shards to stop.
    """
    b = _Builder(view.timeouts, now_s)
    if view.nodes_now_s is not None:
        b.now_s = view.nodes_now_s
    node_phase = _nodes(view, b)
    b.now_s = now_s
    shard_phase = _shards(view, node_phase, b)
    by_job: dict[str, list[tuple[ShardView, ShardPhase, str]]] = {}
    for s in view.shards:
        phase, why = shard_phase[s.key]
        by_job.setdefault(s.job_id, []).append((s, phase, why))
    active = {j.job_id for j in view.jobs}
    for job in view.jobs:
        _job(view, job, by_job.get(job.job_id, []), b)
    for job_id, shards in by_job.items():
        if job_id in active:
            continue
        for s, phase, _ in shards:  # shards of ended jobs still running: stop them
            _stop(s, phase, f"job {job_id} has ended", b)
    known = {(shard_id(s.job_id, s.rank), s.generation) for s in view.shards}
    for r in view.reported:
        if r.state == REPORTED_RUNNING and (r.shard_id, r.generation) not in known:
            b.stops.append(StopShard(r.node, r.shard_id, r.generation))
    return Reconciliation(tuple(b.transitions), tuple(b.stops))
