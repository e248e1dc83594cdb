"""An in-memory :class:`~scheduler.shell.ports.Store`: the simulator's, and the tests'.

It outlives the shells that write to it, so a simulated controller restart reads back what
the one before it wrote; ``fail_writes`` makes every write fail as a full disk would.
"""

from __future__ import annotations

from scheduler.shell.ports import Snapshot, StoredEvent, StoredGpu, StoredJob, StoreError, Write

#: Events kept, newest last (older ones are dropped as a log rotation would).
MAX_EVENTS = 100_000


class MemoryStore:
    """Settings, jobs, GPU limits and events in dictionaries.

    Attributes:
        fail_writes: When set, every write raises :class:`StoreError` with this message.
        broken: When set, :meth:`check` and every write raise :class:`StoreError` with this
            message (a store replaced or damaged under the controller).
        writes: Transactions written so far.
    """

    def __init__(self) -> None:
        self.settings: dict[str, float | str] = {}
        self.jobs: dict[str, StoredJob] = {}
        self.gpus: dict[tuple[str, int], StoredGpu] = {}
        self.event_log: list[StoredEvent] = []
        self.fail_writes: str | None = None
        self.broken: str | None = None
        self.writes = 0

    def ended_counts(self, exclude: set[str]) -> dict[str, int]:
        """See :meth:`scheduler.shell.ports.Store.ended_counts`."""
        counts: dict[str, int] = {}
        for job in self.jobs.values():
            if job.final and job.job_id not in exclude:
                counts[job.phase] = counts.get(job.phase, 0) + 1
        return counts

    def check(self) -> None:
        """See :meth:`scheduler.shell.ports.Store.check`."""
        if self.broken is not None:
            raise StoreError(self.broken)

    def load(self, recent_ended: int) -> Snapshot:
        """See :meth:`scheduler.shell.ports.Store.load`."""
        ordered = sorted(self.jobs.values(), key=lambda j: j.seq)
        ended = [j for j in ordered if j.final][-recent_ended:] if recent_ended > 0 else []
        keep = {j.job_id for j in ended}
        jobs = [j for j in ordered if not j.final or j.job_id in keep]
        last_seq = max((j.seq for j in ordered), default=0)
        return Snapshot(dict(self.settings), jobs, list(self.gpus.values()), last_seq)

    def write(self, changes: Write, durable: bool) -> None:
        """See :meth:`scheduler.shell.ports.Store.write`."""
        if self.broken is not None:
            raise StoreError(self.broken)
        if self.fail_writes is not None:
            raise StoreError(self.fail_writes)
        self.settings.update(changes.settings)
        for job in changes.jobs:
            self.jobs[job.job_id] = job
        for gpu in changes.gpus:
            self.gpus[(gpu.node, gpu.index)] = gpu
        self.event_log.extend(changes.events)
        if len(self.event_log) > MAX_EVENTS:
            del self.event_log[: len(self.event_log) - MAX_EVENTS]
        self.writes += 1

    def events(self, job_id: str | None, limit: int) -> list[StoredEvent]:
        """See :meth:`scheduler.shell.ports.Store.events`."""
        chosen = [e for e in self.event_log if job_id is None or e.job_id == job_id]
        return chosen[-limit:] if limit > 0 else []

    def jobs_page(self, offset: int, limit: int) -> tuple[list[StoredJob], int]:
        """See :meth:`scheduler.shell.ports.Store.jobs_page`."""
        ordered = sorted(self.jobs.values(), key=lambda j: -j.seq)
        return ordered[offset : offset + limit], len(ordered)

    def job(self, job_id: str) -> StoredJob | None:
        """See :meth:`scheduler.shell.ports.Store.job`."""
        return self.jobs.get(job_id)
