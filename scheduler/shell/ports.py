"""The shell's two ports: sessions (to agents) and the store (what survives a restart).

Live, a session is one gRPC stream (:mod:`scheduler.server.agent_service`) and the store is
SQLite (:mod:`scheduler.server.sqlstore`); in the simulator a session is an in-memory
channel in virtual time and the store is :class:`scheduler.shell.memstore.MemoryStore`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from greenllm.proto.v1 import agent_pb2


class Session(Protocol):
    """One live agent stream, as the shell uses it."""

    @property
    def session_id(self) -> str:
        """Unique id of the stream."""
        ...

    @property
    def node(self) -> str:
        """The node it belongs to."""
        ...

    def deliver(self, message: agent_pb2.ControllerMessage) -> None:
        """Queue ``message`` to the agent (never blocks; order is kept)."""
        ...

    def close(self, reason: str) -> None:
        """End the stream (the agent reconnects and registers again)."""
        ...


class StoreError(Exception):
    """The store could not write (disk full, read-only, I/O error) or read its data.

    Attributes:
        message: One line saying what failed.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class StoredShard:
    """One shard of a job as persisted."""

    rank: int
    generation: int
    node: str
    index: int
    phase: str


@dataclass(frozen=True)
class StoredJob:
    """A job as persisted.

    Attributes:
        job_id: Its id.
        seq: Submission order (1, 2, ...).
        spec_json: The spec as submitted.
        phase: Its phase (a :class:`~scheduler.core.lifecycle.JobPhase` value).
        reason: Why it entered that phase.
        submitted_at_s: Unix time of submission.
        generation: Its placement generation.
        restarts: Times it was placed again.
        shards: Its current generation's shards.
        energy_j: Energy booked to it, joules.
        work_units: Work booked to it.
        carried: ``(energy_j, work_units)`` of earlier generations.
        energy_start_j: ``(node, GPU index)`` -> that GPU's energy counter at placement, J.
        final: True once it ended (its ledger is final).
        ended_at_s: Unix time it ended (0 while active).
    """

    job_id: str
    seq: int
    spec_json: str
    phase: str
    reason: str
    submitted_at_s: float
    generation: int = 0
    restarts: int = 0
    shards: tuple[StoredShard, ...] = ()
    energy_j: float = 0.0
    work_units: float = 0.0
    carried: tuple[float, float] = (0.0, 0.0)
    energy_start_j: dict[tuple[str, int], float | None] = field(default_factory=dict)
    final: bool = False
    ended_at_s: float = 0.0


@dataclass(frozen=True)
class StoredGpu:
    """What a restart must know of one GPU to account it before its node registers.

    Attributes:
        node: Its node.
        index: Its index there.
        gpu_type: Its type.
        min_power_limit_w: Lowest limit it reported, watts.
        max_power_limit_w: Highest limit it reported, watts.
        limit_w: The highest limit it may hold (acked or commanded), watts.
        failsafe_w: The highest fail-safe limit its agent may hold for it, watts.
    """

    node: str
    index: int
    gpu_type: str
    min_power_limit_w: float
    max_power_limit_w: float
    limit_w: float
    failsafe_w: float


@dataclass(frozen=True)
class StoredEvent:
    """One entry of the event log (a lifecycle transition, or a cluster event).

    Attributes:
        t_s: Unix time.
        job_id: The job it concerns (None: the cluster or a node).
        kind: The new phase, or the event's kind (``submitted``, ``settings``, ``refused``).
        message: What happened, in words.
        entity: ``job``, ``shard``, ``node`` or ``cluster``.
        key: The record (job id, ``job/generation/rank``, node name).
        old: The phase before ("" when not a transition).
    """

    t_s: float
    job_id: str | None
    kind: str
    message: str
    entity: str = "cluster"
    key: str = ""
    old: str = ""


@dataclass
class Write:
    """Changes written together, in one transaction.

    Attributes:
        settings: Setting name -> value (budget_w, reserve_w, policy).
        jobs: Jobs to insert or update.
        events: Events to append.
        gpus: GPU limits to insert or update.
    """

    settings: dict[str, float | str] = field(default_factory=dict)
    jobs: list[StoredJob] = field(default_factory=list)
    events: list[StoredEvent] = field(default_factory=list)
    gpus: list[StoredGpu] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.settings or self.jobs or self.events or self.gpus)


@dataclass(frozen=True)
class Snapshot:
    """What a controller takes back at start.

    Attributes:
        settings: Persisted settings.
        jobs: Active jobs and the most recently ended ones, in submission order.
        gpus: Every GPU's persisted limits.
        last_seq: Highest job sequence number ever given (ids continue after it).
    """

    settings: dict[str, float | str]
    jobs: list[StoredJob]
    gpus: list[StoredGpu]
    last_seq: int


class Store(Protocol):
    """What the shell persists, and reads back at start."""

    def load(self, recent_ended: int) -> Snapshot:
        """Everything a starting controller needs (``recent_ended`` ended jobs at most).

        Raises:
            StoreError: The data cannot be read.
        """
        ...

    def write(self, changes: Write, durable: bool) -> None:
        """Write ``changes`` in one transaction; ``durable``: on disk before returning.

        Raises:
            StoreError: Nothing was written.
        """
        ...

    def check(self) -> None:
        """Make sure the store is still the one opened and still reads (called now and then).

        Raises:
            StoreError: It is not (writes are refused from then on), or cannot be checked.
        """
        ...

    def events(self, job_id: str | None, limit: int) -> list[StoredEvent]:
        """The newest ``limit`` events (of one job, or of all), oldest first."""
        ...

    def ended_counts(self, exclude: set[str]) -> dict[str, int]:
        """Ended jobs (final) by phase, leaving out the jobs ``exclude`` names."""
        ...

    def jobs_page(self, offset: int, limit: int) -> tuple[list[StoredJob], int]:
        """Jobs newest first from ``offset`` (at most ``limit``), and how many there are."""
        ...

    def job(self, job_id: str) -> StoredJob | None:
        """One job by id (None: no such job)."""
        ...
