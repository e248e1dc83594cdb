"""The controller's SQLite store: round trips, migration, and every way a file can be wrong."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from scheduler.server.sqlschema import APPLICATION_ID, SCHEMA_VERSION
from scheduler.server.sqlstore import SqliteStore
from scheduler.shell.ports import StoredEvent, StoredGpu, StoredJob, StoredShard, StoreError, Write

JOB = StoredJob(
    job_id="t-1",
    seq=1,
    spec_json='{"name": "t", "kind": "train"}',
    phase="running",
    reason="placed on a:0",
    submitted_at_s=10.0,
    generation=1,
    restarts=1,
    shards=(StoredShard(0, 1, "a", 0, "running"),),
    energy_j=5.0,
    work_units=7.0,
    carried=(1.0, 2.0),
    energy_start_j={("a", 0): 3.5},
)

#: greenllm 0.1's schema (user_version 0), as it wrote its databases.
V0 = """
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (job_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, spec_json TEXT NOT NULL,
    state TEXT NOT NULL, submitted_at_s REAL NOT NULL, gpus_json TEXT NOT NULL DEFAULT '{}',
    energy_start_json TEXT NOT NULL DEFAULT '{}', final INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0, restarts INTEGER NOT NULL DEFAULT 0,
    carried_json TEXT NOT NULL DEFAULT '[0, 0]', energy_j REAL NOT NULL DEFAULT 0,
    work_units REAL NOT NULL DEFAULT 0, updated_at_s REAL NOT NULL);
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, t_s REAL NOT NULL, job_id TEXT,
    kind TEXT NOT NULL, message TEXT NOT NULL);
"""


def test_everything_round_trips_and_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "controller.db"
    store = SqliteStore(path)
    store.write(
        Write(
            settings={"budget_w": 1500.0, "policy": "uniform"},
            jobs=[JOB],
            events=[StoredEvent(11.0, "t-1", "running", "job t-1 running", "job", "t-1", "placed")],
            gpus=[StoredGpu("a", 0, "L4", 40.0, 72.0, 60.0, 50.0)],
        ),
        durable=True,
    )
    store.close()
    again = SqliteStore(path)
    snap = again.load(recent_ended=10)
    assert snap.settings == {"budget_w": 1500.0, "policy": "uniform"}
    assert snap.jobs == [JOB] and snap.last_seq == 1
    assert snap.gpus == [StoredGpu("a", 0, "L4", 40.0, 72.0, 60.0, 50.0)]
    assert again.events("t-1", 10)[0].old == "placed"
    assert again.jobs_page(0, 10) == ([JOB], 1)
    assert again.job("t-1") == JOB and again.job("nope") is None


def test_only_recent_ended_jobs_are_loaded(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    ended = [StoredJob(f"j-{i}", i, "{}", "done", "", 0.0, final=True) for i in range(1, 8)]
    store.write(Write(jobs=[*ended, StoredJob("a-8", 8, "{}", "pending", "", 0.0)]), durable=False)
    snap = store.load(recent_ended=2)
    assert [j.job_id for j in snap.jobs] == ["j-6", "j-7", "a-8"] and snap.last_seq == 8
    page, total = store.jobs_page(2, 3)
    assert [j.job_id for j in page] == ["j-6", "j-5", "j-4"] and total == 8


def test_a_previous_version_database_loads(tmp_path: Path) -> None:
    path = tmp_path / "controller.db"
    db = sqlite3.connect(path)
    db.executescript(V0)
    db.execute("INSERT INTO settings VALUES ('budget_w', '1800.0')")
    db.execute(
        "INSERT INTO jobs(job_id, seq, spec_json, state, submitted_at_s, gpus_json, "
        "energy_start_json, generation, energy_j, work_units, updated_at_s) "
        "VALUES (?, 1, ?, 'running', 5.0, ?, ?, 0, 9.0, 3.0, 6.0)",
        (
            "t-1",
            json.dumps({"name": "t", "kind": "train"}),
            json.dumps({"0": ["a", 2]}),
            json.dumps([["a", 2, 100.0]]),
        ),
    )
    db.execute(
        "INSERT INTO events(t_s, job_id, kind, message) VALUES (5.0, 't-1', 'submitted', 'x')"
    )
    db.commit()
    db.close()
    store = SqliteStore(path)
    snap = store.load(10)
    assert snap.settings["budget_w"] == 1800.0
    [job] = snap.jobs
    assert job.shards == (StoredShard(0, 0, "a", 2, "running"),)
    assert job.energy_start_j == {("a", 2): 100.0} and job.phase == "running"
    assert store.events("t-1", 5)[0].entity == "cluster"
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert check.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def _error(path: Path) -> str:
    with pytest.raises(StoreError) as info:
        SqliteStore(path)
    message = info.value.message
    assert "\n" not in message and str(path) in message
    return message


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "controller.db"
    path.write_bytes(b"this is no database " * 400)
    assert "not a readable greenllm database" in _error(path)


def test_a_truncated_database(tmp_path: Path) -> None:
    path = tmp_path / "controller.db"
    store = SqliteStore(path)
    store.write(
        Write(jobs=[StoredJob(f"j-{i}", i, "x" * 2000, "done", "", 0.0) for i in range(50)]), True
    )
    store.close()
    for extra in tmp_path.glob("controller.db-*"):
        extra.unlink()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "not a readable greenllm database" in _error(path)


def test_another_programs_database(tmp_path: Path) -> None:
    path = tmp_path / "controller.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER)")
    assert "another program's database" in _error(path)


def test_a_newer_database(tmp_path: Path) -> None:
    path = tmp_path / "controller.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    assert "newer greenllm" in _error(path)


def test_a_deleted_database_is_not_an_empty_cluster(tmp_path: Path) -> None:
    path = tmp_path / "controller.db"
    SqliteStore(path).close()
    for f in tmp_path.glob("controller.db*"):
        if not f.name.endswith(".id"):
            f.unlink()
    message = _error(path)
    assert "is missing" in message and "delete" in message
    (tmp_path / "controller.db.id").unlink()
    SqliteStore(path).close()  # deliberately fresh: fine


def test_a_full_disk_fails_the_write_and_nothing_half_written(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "controller.db")
    store.write(Write(settings={"budget_w": 1000.0}), durable=True)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # the file may not grow: a full disk
    big = [StoredJob(f"j-{i}", i, "x" * 4000, "pending", "", 0.0) for i in range(20)]
    with pytest.raises(StoreError, match="full") as raised:
        store.write(Write(settings={"budget_w": 2000.0}, jobs=big), durable=True)
    assert "cannot rollback" not in raised.value.message
    assert store.load(10).settings == {"budget_w": 1000.0} and store.load(10).jobs == []


def test_a_read_only_database_fails_the_write(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "controller.db")
    store._db.execute("PRAGMA query_only = ON")  # as a read-only file system would
    with pytest.raises(StoreError, match="readonly"):
        store.write(Write(settings={"budget_w": 2000.0}), durable=True)


def _budget(budget_w: float) -> Write:
    return Write(settings={"budget_w": budget_w})


def test_a_database_overwritten_under_the_store_refuses_writes(tmp_path: Path) -> None:
    """Issue 19 (c): 64 KiB of random bytes written over the file (same inode) under a running
    controller went unnoticed, and an acknowledged budget landed in a file nobody can read."""
    import os

    path = tmp_path / "controller.db"
    store = SqliteStore(path)
    store.write(_budget(1000.0), durable=True)
    path.write_bytes(os.urandom(64 * 1024))
    with pytest.raises(StoreError, match="damaged") as raised:
        store.write(_budget(2000.0), durable=True)
    assert str(path) in raised.value.message and "refused" in raised.value.message
    with pytest.raises(StoreError, match="damaged"):  # and every write after it
        store.write(Write(events=[StoredEvent(1.0, None, "x", "y")]), durable=False)


def test_a_database_replaced_or_deleted_under_the_store_refuses_writes(tmp_path: Path) -> None:
    replaced = tmp_path / "a" / "controller.db"
    store = SqliteStore(replaced)
    other = SqliteStore(tmp_path / "other.db")  # a valid greenllm database, but not this one
    other.close()
    (tmp_path / "other.db").replace(replaced)
    with pytest.raises(StoreError, match="replaced by another file"):
        store.check()
    with pytest.raises(StoreError, match="replaced"):
        store.write(_budget(2000.0), durable=False)
    deleted = tmp_path / "b" / "controller.db"
    store = SqliteStore(deleted)
    deleted.unlink()
    with pytest.raises(StoreError, match="is missing") as raised:
        store.write(_budget(2000.0), durable=True)
    assert str(deleted) in raised.value.message


def test_a_healthy_database_passes_its_checks(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "controller.db")
    for budget_w in (1000.0, 1100.0):
        store.write(_budget(budget_w), durable=True)
        store.check()
    assert store.load(10).settings == {"budget_w": 1100.0} and store.broken is None
