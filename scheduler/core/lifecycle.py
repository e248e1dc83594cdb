"""Lifecycles of jobs, shards and nodes: phases, transition tables and state timeouts.

Every phase change the controller makes is a row of one of these tables: ``(phase,
event) -> phase``. :func:`next_phase` looks a change up and refuses any change the
table does not list, so a phase can only move the way the table says. Each phase may
have a timeout (:class:`Timeouts`): when a record has been in it that long, the
``timeout`` event fires (see :mod:`scheduler.core.reconcile`).

Phases are string enums: their values are what ``status`` and the event log show, and
what the ``state`` fields of the wire protocol carry (the enum fields of
``greenllm.v1`` mirror them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import TypeVar

P = TypeVar("P", bound=Enum)
E = TypeVar("E", bound=Enum)


class JobPhase(StrEnum):
    """Where a job is in its life."""

    PENDING = "pending"  # waiting for GPUs
    PLACED = "placed"  # shards started, none has reported progress yet
    RUNNING = "running"  # at least one shard of this generation reported progress
    DONE = "done"  # every shard finished its work
    FAILED = "failed"  # given up (restarts exhausted, or it cannot run)
    CANCELLED = "cancelled"  # stopped by an operator

    @property
    def active(self) -> bool:
        """Holds, or waits for, GPUs."""
        return self in (JobPhase.PENDING, JobPhase.PLACED, JobPhase.RUNNING)


class ShardPhase(StrEnum):
    """Where one shard (a training rank or an inference replica) is."""

    STARTING = "starting"  # StartShard sent, not acked
    STARTED = "started"  # acked, no progress reported yet
    RUNNING = "running"  # reporting progress
    DONE = "done"  # finished its work
    FAILED = "failed"  # failed to start, crashed, or its node was lost
    STOPPING = "stopping"  # StopShard sent
    STOPPED = "stopped"  # stopped on request

    @property
    def ended(self) -> bool:
        """No longer runs (or never will)."""
        return self in (ShardPhase.DONE, ShardPhase.FAILED, ShardPhase.STOPPED)


class NodePhase(StrEnum):
    """How the controller sees a node."""

    UNKNOWN = "unknown"  # not registered since this controller started
    LIVE = "live"  # registered, telemetry fresh
    STALE = "stale"  # telemetry old or stream gone: counted at its worst limits
    LOST = "lost"  # silent past the lost timeout, or known down: its shards are placed elsewhere


class JobEvent(StrEnum):
    """What can happen to a job."""

    PLACED = "placed"
    PROGRESS = "progress"
    ALL_DONE = "all_done"
    SHARD_FAILED = "shard_failed"
    NODE_LOST = "node_lost"
    RESTART = "restart"  # placed again after a failure (a new generation)
    GIVE_UP = "give_up"  # restarts exhausted
    CANCEL = "cancel"
    TIMEOUT = "timeout"


class ShardEvent(StrEnum):
    """What can happen to a shard."""

    ACKED = "acked"
    REFUSED = "refused"  # its StartShard ack failed
    PROGRESS = "progress"
    FINISHED = "finished"
    CRASHED = "crashed"
    STOP = "stop"
    STOPPED = "stopped"
    NODE_LOST = "node_lost"
    TIMEOUT = "timeout"


class NodeEvent(StrEnum):
    """What can happen to a node."""

    REGISTERED = "registered"
    TELEMETRY = "telemetry"
    SILENT = "silent"  # telemetry older than the stale timeout, or the stream ended
    TIMEOUT = "timeout"
    #: Known powered off: an operator said so (``greenllm node down``), or its Ray node
    #: died with its machine.
    DOWN = "down"


J, S, N = JobPhase, ShardPhase, NodePhase

JOB_TRANSITIONS: dict[tuple[JobPhase, JobEvent], JobPhase] = {
    (J.PENDING, JobEvent.PLACED): J.PLACED,
    (J.PENDING, JobEvent.CANCEL): J.CANCELLED,
    (J.PENDING, JobEvent.GIVE_UP): J.FAILED,
    (J.PLACED, JobEvent.PROGRESS): J.RUNNING,
    (J.PLACED, JobEvent.ALL_DONE): J.DONE,
    (J.PLACED, JobEvent.RESTART): J.PENDING,
    (J.PLACED, JobEvent.GIVE_UP): J.FAILED,
    (J.PLACED, JobEvent.CANCEL): J.CANCELLED,
    (J.RUNNING, JobEvent.ALL_DONE): J.DONE,
    (J.RUNNING, JobEvent.RESTART): J.PENDING,
    (J.RUNNING, JobEvent.GIVE_UP): J.FAILED,
    (J.RUNNING, JobEvent.CANCEL): J.CANCELLED,
}

SHARD_TRANSITIONS: dict[tuple[ShardPhase, ShardEvent], ShardPhase] = {
    (S.STARTING, ShardEvent.ACKED): S.STARTED,
    (S.STARTING, ShardEvent.PROGRESS): S.RUNNING,
    (S.STARTING, ShardEvent.FINISHED): S.DONE,
    (S.STARTING, ShardEvent.REFUSED): S.FAILED,
    (S.STARTING, ShardEvent.CRASHED): S.FAILED,
    (S.STARTING, ShardEvent.NODE_LOST): S.FAILED,
    (S.STARTING, ShardEvent.TIMEOUT): S.FAILED,
    (S.STARTING, ShardEvent.STOP): S.STOPPING,
    (S.STARTED, ShardEvent.PROGRESS): S.RUNNING,
    (S.STARTED, ShardEvent.FINISHED): S.DONE,
    (S.STARTED, ShardEvent.CRASHED): S.FAILED,
    (S.STARTED, ShardEvent.NODE_LOST): S.FAILED,
    (S.STARTED, ShardEvent.TIMEOUT): S.FAILED,
    (S.STARTED, ShardEvent.STOP): S.STOPPING,
    (S.RUNNING, ShardEvent.FINISHED): S.DONE,
    (S.RUNNING, ShardEvent.CRASHED): S.FAILED,
    (S.RUNNING, ShardEvent.NODE_LOST): S.FAILED,
    (S.RUNNING, ShardEvent.STOP): S.STOPPING,
    (S.STOPPING, ShardEvent.STOPPED): S.STOPPED,
    (S.STOPPING, ShardEvent.FINISHED): S.STOPPED,
    (S.STOPPING, ShardEvent.CRASHED): S.STOPPED,
    (S.STOPPING, ShardEvent.NODE_LOST): S.STOPPED,
    (S.STOPPING, ShardEvent.TIMEOUT): S.STOPPED,
}

NODE_TRANSITIONS: dict[tuple[NodePhase, NodeEvent], NodePhase] = {
    (N.UNKNOWN, NodeEvent.REGISTERED): N.LIVE,
    (N.UNKNOWN, NodeEvent.TIMEOUT): N.LOST,
    (N.LIVE, NodeEvent.SILENT): N.STALE,
    (N.LIVE, NodeEvent.REGISTERED): N.LIVE,
    (N.STALE, NodeEvent.TELEMETRY): N.LIVE,
    (N.STALE, NodeEvent.REGISTERED): N.LIVE,
    (N.STALE, NodeEvent.TIMEOUT): N.LOST,
    (N.UNKNOWN, NodeEvent.DOWN): N.LOST,
    (N.STALE, NodeEvent.DOWN): N.LOST,
    (N.LOST, NodeEvent.REGISTERED): N.LIVE,
}


class IllegalTransition(ValueError):
    """A phase change the transition table does not list."""


def next_phase(table: Mapping[tuple[P, E], P], phase: P, event: E) -> P:
    """The phase ``event`` moves ``phase`` to.

    Raises:
        IllegalTransition: The table has no such row.
    """
    try:
        return table[(phase, event)]
    except KeyError:
        raise IllegalTransition(f"{phase.value} --{event.value}--> ? is not allowed") from None


def allows(table: Mapping[tuple[P, E], P], phase: P, event: E) -> bool:
    """Whether ``event`` may happen in ``phase``."""
    return (phase, event) in table


@dataclass(frozen=True)
class Timeouts:
    """How long a record may stay in a phase before its ``timeout`` event fires, seconds.

    Attributes:
        job_placed_s: A placed job none of whose shards reported progress is placed again.
        shard_starting_s: A StartShard not acked by then fails the shard.
        shard_started_s: A shard that started but never reported fails.
        shard_stopping_s: A StopShard not confirmed by then is taken as done (the shard's
            GPU is free again; the agent stops what it still runs when it next starts one).
        node_stale_s: A stale node is declared lost (its shards are placed elsewhere).
        node_unknown_s: A node not heard from since this controller started is declared
            lost, timed from the start.
    """

    job_placed_s: float = 300.0
    shard_starting_s: float = 60.0
    shard_started_s: float = 300.0
    shard_stopping_s: float = 60.0
    node_stale_s: float = 10.0
    node_unknown_s: float = 10.0

    def job(self, phase: JobPhase) -> float:
        """Timeout of a job phase, seconds (inf: none)."""
        return self.job_placed_s if phase is JobPhase.PLACED else math.inf

    def shard(self, phase: ShardPhase) -> float:
        """Timeout of a shard phase, seconds (inf: none)."""
        if phase is ShardPhase.STARTING:
            return self.shard_starting_s
        if phase is ShardPhase.STARTED:
            return self.shard_started_s
        if phase is ShardPhase.STOPPING:
            return self.shard_stopping_s
        return math.inf

    def node(self, phase: NodePhase) -> float:
        """Timeout of a node phase, seconds (inf: none)."""
        if phase is NodePhase.STALE:
            return self.node_stale_s
        if phase is NodePhase.UNKNOWN:
            return self.node_unknown_s
        return math.inf

    @classmethod
    def for_failsafe(cls, failsafe_timeout_s: float, **overrides: float) -> Timeouts:
        """Timeouts for a cluster whose agents fail safe after ``failsafe_timeout_s``: a node
        is lost only after twice that (at least 10 s), long enough for an agent to reconnect
        after a controller restart."""
        lost_s = max(10.0, 2.0 * failsafe_timeout_s)
        values: dict[str, float] = {"node_stale_s": lost_s, "node_unknown_s": lost_s}
        values.update(overrides)
        return cls(**values)
