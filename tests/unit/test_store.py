"""The controller's SQLite store keeps settings, jobs, ledger and events across reopenings."""

from __future__ import annotations

from pathlib import Path

from scheduler.store import StateStore, StoredJob


def job(state: str = "pending", energy_j: float = 0.0) -> StoredJob:
    return StoredJob("t-1", 1, '{"name": "t"}', state, 1000.0, {0: ("n1", 2)}, energy_j, 5.0)


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    db = tmp_path / "state" / "controller.db"
    store = StateStore(db)
    store.set_setting("budget_w", 2500.0)
    store.set_setting("policy", "min-energy")
    store.save_job(job())
    store.save_job(job("running", energy_j=123.5))
    store.add_event("submitted", "job t-1 submitted", "t-1")
    store.add_event("budget", "budget set to 2500 W")
    store.close()

    again = StateStore(db)
    assert again.settings() == {"budget_w": 2500.0, "policy": "min-energy"}
    [stored] = again.jobs()
    assert stored.state == "running" and stored.energy_j == 123.5
    assert stored.gpus == {0: ("n1", 2)}
    assert [e.kind for e in again.events()] == ["submitted", "budget"]
    assert [e.message for e in again.events("t-1")] == ["job t-1 submitted"]


def test_events_limit_keeps_newest(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "c.db")
    for i in range(10):
        store.add_event("tick", str(i), "j")
    assert [e.message for e in store.events("j", limit=3)] == ["7", "8", "9"]
