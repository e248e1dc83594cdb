"""Keeps the controller's state in SQLite (:mod:`scheduler.store`) so a restart loses nothing.

What is kept: the budget, reserve and policy an operator set; every job with its state,
placement and the GPU energy counters at placement; the energy and work booked to each
job (final once it ends); and an event log. After a restart the controller takes all of it
back before it serves: agents re-register, running shards keep running and keep counting,
and each job's ledger continues from the same counters.
"""

from __future__ import annotations

import json
import logging
import time

from greenllm.jobspec import parse_job_spec
from scheduler.server.jobs import ACTIVE_STATES, JobRecord, JobTable
from scheduler.server.state import ClusterState
from scheduler.server.views import measure_job
from scheduler.store import StateStore, StoredJob

log = logging.getLogger(__name__)

#: How often the ledger of running jobs is written, seconds.
LEDGER_PERIOD_S = 5.0


def _stored(job: JobRecord, energy_j: float, work_units: float) -> StoredJob:
    return StoredJob(
        job_id=job.job_id,
        seq=job.seq,
        spec_json=job.spec_json,
        state=job.state,
        submitted_at_s=job.submitted_at_s,
        gpus=dict(job.gpus),
        energy_j=energy_j,
        work_units=work_units,
        energy_start_j=dict(job.energy_start_j),
        final=job.final is not None,
        generation=job.generation,
        restarts=job.restarts,
        carried=job.carried,
    )


def _record(s: StoredJob) -> JobRecord:
    job = JobRecord(
        job_id=s.job_id,
        spec=parse_job_spec(json.loads(s.spec_json), f"stored job {s.job_id}"),
        spec_json=s.spec_json,
        state=s.state,
        submitted_at_s=s.submitted_at_s,
        seq=s.seq,
        generation=s.generation,
        restarts=s.restarts,
        carried=s.carried,
    )
    job.gpus = dict(s.gpus)
    job.energy_start_j = dict(s.energy_start_j)
    if s.final or s.state not in ACTIVE_STATES:
        job.final = (s.energy_j, s.work_units)
    return job


class Persistence:
    """Writes the controller's state as it changes; restores it at start.

    Args:
        store: The SQLite store.
        state: The cluster state (budget, reserve, policy).
        jobs: The job table.
    """

    def __init__(self, store: StateStore, state: ClusterState, jobs: JobTable) -> None:
        self.store = store
        self.state = state
        self.jobs = jobs
        self._saved: dict[str, tuple[str, tuple[tuple[int, tuple[str, int]], ...], bool, int]] = {}
        self._settings: tuple[float, float, str] | None = None
        self._ledger_at_s = 0.0

    def restore(self) -> list[JobRecord]:
        """Load settings and jobs into the state and job table; returns the jobs."""
        settings = self.store.settings()
        if "budget_w" in settings:
            self.state.budget_w = float(settings["budget_w"])
            self.state.reserve_w = float(settings["reserve_w"])
        if "policy" in settings:
            self.state.policy_name = str(settings["policy"])
        jobs = [_record(s) for s in self.store.jobs()]
        self.jobs.restore(jobs)
        for job in jobs:
            self._saved[job.job_id] = self._key(job)
        self._settings = self._settings_key()
        if jobs or settings:
            log.info(
                "restored %d jobs, budget %g W, policy %s from %s",
                len(jobs),
                self.state.budget_w,
                self.state.policy_name,
                self.store.path,
            )
        return jobs

    @staticmethod
    def _key(job: JobRecord) -> tuple[str, tuple[tuple[int, tuple[str, int]], ...], bool, int]:
        return (job.state, tuple(sorted(job.gpus.items())), job.final is not None, job.generation)

    def _settings_key(self) -> tuple[float, float, str]:
        return (self.state.budget_w, self.state.reserve_w, self.state.policy_name)

    def submitted(self, job: JobRecord) -> None:
        """Write a job the moment it is accepted (before its id goes back to the user)."""
        self.save_job(job)
        self.store.add_event("submitted", f"job {job.job_id} submitted", job.job_id)

    def save_job(self, job: JobRecord) -> None:
        """Write one job now (with its ledger)."""
        m = measure_job(self.state, job)
        self.store.save_job(_stored(job, m.energy_j, m.work_units))
        self._saved[job.job_id] = self._key(job)

    def sync(self) -> None:
        """Write what changed since the last call; the ledger every :data:`LEDGER_PERIOD_S`."""
        settings = self._settings_key()
        if settings != self._settings:
            budget_w, reserve_w, policy = settings
            self.store.set_setting("budget_w", budget_w)
            self.store.set_setting("reserve_w", reserve_w)
            self.store.set_setting("policy", policy)
            self.store.add_event("settings", f"budget {budget_w:g} W, reserve {reserve_w:g} W, "
                                 f"policy {policy}")  # fmt: skip
            self._settings = settings
        now_s = time.monotonic()
        ledger_due = now_s - self._ledger_at_s >= LEDGER_PERIOD_S
        for job in list(self.jobs.jobs.values()):
            previous = self._saved.get(job.job_id)
            if previous is None:
                self.store.add_event("submitted", f"job {job.job_id} submitted", job.job_id)
            changed = previous != self._key(job)
            if job.state != (previous[0] if previous else "pending"):
                self.store.add_event(job.state, f"job {job.job_id} {job.state}", job.job_id)
            if changed or (ledger_due and job.state in ACTIVE_STATES):
                self.save_job(job)
        if ledger_due:
            self._ledger_at_s = now_s
