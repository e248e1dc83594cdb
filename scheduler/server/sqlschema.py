"""The controller database's schema, and the migrations from earlier versions.

Versions (``PRAGMA user_version``): 0 is greenllm 0.1's database (settings, jobs, events);
2 adds each job's reason, shards and end time, the GPUs' persisted limits, and the event
log's entity, key and previous phase.
"""

from __future__ import annotations

import json
import sqlite3

#: ``PRAGMA application_id`` of greenllm's databases ("grlm").
APPLICATION_ID = 0x67726C6D
#: The schema version this code writes.
SCHEMA_VERSION = 2

_V2 = """
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    spec_json TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    submitted_at_s REAL NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    restarts INTEGER NOT NULL DEFAULT 0,
    shards_json TEXT NOT NULL DEFAULT '[]',
    energy_j REAL NOT NULL DEFAULT 0,
    work_units REAL NOT NULL DEFAULT 0,
    carried_json TEXT NOT NULL DEFAULT '[0, 0]',
    energy_start_json TEXT NOT NULL DEFAULT '[]',
    final INTEGER NOT NULL DEFAULT 0,
    ended_at_s REAL NOT NULL DEFAULT 0,
    updated_at_s REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_seq ON jobs (seq);
CREATE TABLE IF NOT EXISTS gpus (
    node TEXT NOT NULL,
    idx INTEGER NOT NULL,
    gpu_type TEXT NOT NULL,
    min_w REAL NOT NULL,
    max_w REAL NOT NULL,
    limit_w REAL NOT NULL,
    failsafe_w REAL NOT NULL,
    PRIMARY KEY (node, idx)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    t_s REAL NOT NULL,
    job_id TEXT,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    entity TEXT NOT NULL DEFAULT 'cluster',
    key TEXT NOT NULL DEFAULT '',
    old TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, id);
"""


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}


def _from_v0(db: sqlite3.Connection) -> None:
    """greenllm 0.1: jobs had ``gpus_json`` (rank -> [node, index]) and no reason or end."""
    jobs = _columns(db, "jobs")
    for column, ddl in (
        ("reason", "TEXT NOT NULL DEFAULT ''"),
        ("shards_json", "TEXT NOT NULL DEFAULT '[]'"),
        ("ended_at_s", "REAL NOT NULL DEFAULT 0"),
    ):
        if column not in jobs:
            db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {ddl}")
    if "gpus_json" in jobs:
        rows = db.execute("SELECT job_id, state, generation, gpus_json FROM jobs").fetchall()
        for job_id, state, generation, gpus_json in rows:
            phase = "running" if state in ("placed", "running") else "done"
            shards = [
                [int(r), generation, n, int(i), phase]
                for r, (n, i) in json.loads(gpus_json).items()
            ]
            db.execute(
                "UPDATE jobs SET shards_json = ? WHERE job_id = ?", (json.dumps(shards), job_id)
            )
    events = _columns(db, "events")
    for column, ddl in (
        ("entity", "TEXT NOT NULL DEFAULT 'cluster'"),
        ("key", "TEXT NOT NULL DEFAULT ''"),
        ("old", "TEXT NOT NULL DEFAULT ''"),
    ):
        if events and column not in events:
            db.execute(f"ALTER TABLE events ADD COLUMN {column} {ddl}")


def migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring a database at ``version`` to :data:`SCHEMA_VERSION` (one transaction)."""
    if version == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version == 0 and "jobs" in tables:
            _from_v0(db)
        # statement by statement, not executescript(): that commits the open transaction
        # first, and the migration must be one (the DDL holds no ';' inside a literal)
        for statement in _V2.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
