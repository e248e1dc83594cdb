"""The controller's durable state in SQLite: settings, jobs, the energy ledger, events.

Everything a controller restart must not lose lives here (``<state_dir>/controller.db``):
the budget and policy an operator set, every job with its placement, the energy and work
booked to each job, and an event log per job. Writes are small transactions in WAL mode,
so a killed controller leaves a consistent database.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    spec_json TEXT NOT NULL,
    state TEXT NOT NULL,
    submitted_at_s REAL NOT NULL,
    gpus_json TEXT NOT NULL DEFAULT '{}',
    energy_start_json TEXT NOT NULL DEFAULT '{}',
    final INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0,
    restarts INTEGER NOT NULL DEFAULT 0,
    carried_json TEXT NOT NULL DEFAULT '[0, 0]',
    energy_j REAL NOT NULL DEFAULT 0,
    work_units REAL NOT NULL DEFAULT 0,
    updated_at_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    t_s REAL NOT NULL,
    job_id TEXT,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, id);
"""


@dataclass(frozen=True)
class StoredJob:
    """A job as persisted.

    Attributes:
        job_id: Its id.
        seq: Submission order (1, 2, ...).
        spec_json: The spec as submitted.
        state: Its last recorded state.
        submitted_at_s: Unix time of submission.
        gpus: Shard index -> (node, GPU index).
        energy_j: Energy booked to the job, joules.
        work_units: Work booked to the job (samples or tokens).
        energy_start_j: ``(node, GPU index)`` -> the GPU's energy counter at placement, J.
        final: True when the job has ended and its ledger is final.
        generation: Its placement generation.
        restarts: Times it was placed again.
        carried: ``(energy_j, work_units)`` of earlier generations.
    """

    job_id: str
    seq: int
    spec_json: str
    state: str
    submitted_at_s: float
    gpus: dict[int, tuple[str, int]]
    energy_j: float
    work_units: float
    energy_start_j: dict[tuple[str, int], float | None] = field(default_factory=dict)
    final: bool = False
    generation: int = 0
    restarts: int = 0
    carried: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Event:
    """One entry of the event log.

    Attributes:
        t_s: Unix time.
        job_id: The job it concerns (None: the cluster).
        kind: Short kind, e.g. ``submitted``, ``placed``, ``budget``.
        message: What happened.
    """

    t_s: float
    job_id: str | None
    kind: str
    message: str


class StateStore:
    """SQLite-backed controller state; safe to call from several threads.

    Args:
        path: The database file (created with its folder when missing).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # -- settings -----------------------------------------------------------------------
    def set_setting(self, key: str, value: float | str) -> None:
        """Persist one setting (budget_w, reserve_w, policy, ...)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO settings(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    def settings(self) -> dict[str, float | str]:
        """Every persisted setting."""
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM settings").fetchall()
        return {k: json.loads(v) for k, v in rows}

    # -- jobs ---------------------------------------------------------------------------
    def save_job(self, job: StoredJob) -> None:
        """Insert or update a job (its state, placement and ledger)."""
        gpus = {str(k): list(v) for k, v in job.gpus.items()}
        starts = [[n, i, j] for (n, i), j in job.energy_start_j.items()]
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs(job_id, seq, spec_json, state, submitted_at_s, gpus_json, "
                "energy_start_json, final, generation, restarts, carried_json, energy_j, "
                "work_units, updated_at_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(job_id) DO UPDATE SET state = excluded.state, "
                "gpus_json = excluded.gpus_json, energy_start_json = excluded.energy_start_json, "
                "final = excluded.final, generation = excluded.generation, "
                "restarts = excluded.restarts, carried_json = excluded.carried_json, "
                "energy_j = excluded.energy_j, "
                "work_units = excluded.work_units, updated_at_s = excluded.updated_at_s",
                (
                    job.job_id,
                    job.seq,
                    job.spec_json,
                    job.state,
                    job.submitted_at_s,
                    json.dumps(gpus),
                    json.dumps(starts),
                    int(job.final),
                    job.generation,
                    job.restarts,
                    json.dumps(list(job.carried)),
                    job.energy_j,
                    job.work_units,
                    time.time(),
                ),
            )

    def jobs(self) -> list[StoredJob]:
        """Every job, in submission order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT job_id, seq, spec_json, state, submitted_at_s, gpus_json, energy_j, "
                "work_units, energy_start_json, final, generation, restarts, carried_json "
                "FROM jobs ORDER BY seq"
            ).fetchall()
        return [
            StoredJob(
                job_id=r[0],
                seq=r[1],
                spec_json=r[2],
                state=r[3],
                submitted_at_s=r[4],
                gpus={int(k): (v[0], int(v[1])) for k, v in json.loads(r[5]).items()},
                energy_j=r[6],
                work_units=r[7],
                energy_start_j={(n, int(i)): j for n, i, j in json.loads(r[8])},
                final=bool(r[9]),
                generation=r[10],
                restarts=r[11],
                carried=(float(json.loads(r[12])[0]), float(json.loads(r[12])[1])),
            )
            for r in rows
        ]

    # -- events -------------------------------------------------------------------------
    def add_event(self, kind: str, message: str, job_id: str | None = None) -> None:
        """Append to the event log."""
        with self._lock:
            self._db.execute(
                "INSERT INTO events(t_s, job_id, kind, message) VALUES (?, ?, ?, ?)",
                (time.time(), job_id, kind, message),
            )

    def events(self, job_id: str | None = None, limit: int = 200) -> list[Event]:
        """The newest ``limit`` events (of one job, or of all), oldest first."""
        query = "SELECT t_s, job_id, kind, message FROM events"
        args: tuple[object, ...] = ()
        if job_id is not None:
            query += " WHERE job_id = ?"
            args = (job_id,)
        query += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*args, limit)).fetchall()
        return [Event(*r) for r in reversed(rows)]
