"""Lifecycles as tables: reconcile() over hand-made views (no shell, no store, no sockets)."""

from __future__ import annotations

import pytest

from scheduler.core.lifecycle import (
    JOB_TRANSITIONS,
    NODE_TRANSITIONS,
    SHARD_TRANSITIONS,
    IllegalTransition,
    JobEvent,
    JobPhase,
    NodePhase,
    ShardPhase,
    Timeouts,
    next_phase,
)
from scheduler.core.reconcile import (
    JobView,
    LifecycleView,
    NodeView,
    ReportedShard,
    ShardView,
    reconcile,
)

T = Timeouts(
    job_placed_s=30,
    shard_starting_s=5,
    shard_started_s=30,
    shard_stopping_s=5,
    node_stale_s=10,
    node_unknown_s=10,
)
J, S, N = JobPhase, ShardPhase, NodePhase


def node(phase: NodePhase = N.LIVE, since_s: float = 0.0, fresh: bool = True) -> NodeView:
    return NodeView("n", phase, since_s, fresh)


def shard(
    phase: ShardPhase, rank: int = 0, since_s: float = 0.0, generation: int = 0, **kw: object
) -> ShardView:
    return ShardView("j-1", rank, generation, "n", phase, since_s, **kw)  # type: ignore[arg-type]


def job(phase: JobPhase = J.RUNNING, since_s: float = 0.0, restarts: int = 0) -> JobView:
    return JobView("j-1", phase, since_s, 0, restarts)


def run(now_s: float, nodes=(), jobs=(), shards=(), reported=()):  # type: ignore[no-untyped-def]
    view = LifecycleView(tuple(nodes), tuple(jobs), tuple(shards), tuple(reported), T, 3)
    return reconcile(view, now_s)


def changes(result, kind: str) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(t.old.value, t.new.value) for t in result.transitions if t.kind == kind]


@pytest.mark.parametrize(
    ("phase", "fresh", "since_s", "now_s", "expected"),
    [
        (N.LIVE, True, 0, 100, []),
        (N.LIVE, False, 0, 1, [("live", "stale")]),
        (N.STALE, True, 0, 1, [("stale", "live")]),
        (N.STALE, False, 0, 9, []),
        (N.STALE, False, 0, 10, [("stale", "lost")]),
        (N.UNKNOWN, False, 0, 9, []),
        (N.UNKNOWN, False, 0, 10, [("unknown", "lost")]),
        (N.LOST, False, 0, 1000, []),
    ],
)
def test_node_table(phase, fresh, since_s, now_s, expected) -> None:  # type: ignore[no-untyped-def]
    assert changes(run(now_s, nodes=[node(phase, since_s, fresh)]), "node") == expected


@pytest.mark.parametrize(
    ("view", "now_s", "expected"),
    [
        (shard(S.STARTING, ack=""), 1, [("starting", "started")]),
        (shard(S.STARTING, ack="no GPU 7"), 1, [("starting", "failed")]),
        (shard(S.STARTING), 4, []),
        (shard(S.STARTING), 5, [("starting", "failed")]),
        (
            shard(S.STARTING, ack="", reported="running", progressed=True),
            1,
            [("starting", "started"), ("started", "running")],
        ),
        (shard(S.STARTED, reported="running", progressed=True), 1, [("started", "running")]),
        (shard(S.STARTED), 30, [("started", "failed")]),
        (shard(S.RUNNING, reported="done"), 1, [("running", "done")]),
        (shard(S.RUNNING, reported="failed", error="OOM"), 1, [("running", "failed")]),
        (shard(S.RUNNING), 10_000, []),
        (shard(S.STOPPING, reported="stopped"), 1, [("stopping", "stopped")]),
        (shard(S.STOPPING), 5, [("stopping", "stopped")]),
    ],
)
def test_shard_table(view: ShardView, now_s: float, expected: list[tuple[str, str]]) -> None:
    result = run(now_s, nodes=[node()], jobs=[job()], shards=[view])
    assert changes(result, "shard") == expected


def test_a_lost_node_fails_its_shards_and_restarts_the_job() -> None:
    result = run(
        10,
        nodes=[node(N.STALE, 0, False)],
        jobs=[job()],
        shards=[shard(S.RUNNING, 0), shard(S.RUNNING, 1)],
    )
    assert changes(result, "node") == [("stale", "lost")]
    assert changes(result, "shard")[:2] == [("running", "failed"), ("running", "failed")]
    [j] = [t for t in result.transitions if t.kind == "job"]
    assert (j.old, j.new, j.event) == (J.RUNNING, J.PENDING, JobEvent.RESTART)
    assert "node n lost" in j.reason


def test_a_failed_shard_restarts_the_job_and_stops_the_others() -> None:
    result = run(
        1,
        nodes=[node()],
        jobs=[job()],
        shards=[shard(S.RUNNING, 0, reported="failed", error="OOM"), shard(S.RUNNING, 1)],
    )
    assert ("running", "stopping") in changes(result, "shard")
    assert [s.shard_id for s in result.stops] == ["j-1-1"]
    assert changes(result, "job") == [("running", "pending")]


def test_restarts_run_out() -> None:
    result = run(
        1,
        nodes=[node()],
        jobs=[job(restarts=3)],
        shards=[shard(S.RUNNING, reported="failed", error="OOM")],
    )
    [j] = [t for t in result.transitions if t.kind == "job"]
    assert j.new is J.FAILED and "after 3 restarts" in j.reason


def test_a_refused_start_fails_the_placement() -> None:
    result = run(
        1, nodes=[node()], jobs=[job(J.PLACED)], shards=[shard(S.STARTING, ack="GPU busy")]
    )
    assert changes(result, "job") == [("placed", "pending")]


def test_placed_job_runs_on_progress_is_done_when_every_shard_is() -> None:
    running = run(
        1,
        nodes=[node()],
        jobs=[job(J.PLACED)],
        shards=[shard(S.STARTED, 0, reported="running", progressed=True), shard(S.STARTED, 1)],
    )
    assert changes(running, "job") == [("placed", "running")]
    done = run(
        1,
        nodes=[node()],
        jobs=[job()],
        shards=[shard(S.RUNNING, 0, reported="done"), shard(S.DONE, 1)],
    )
    assert changes(done, "job") == [("running", "done")]


def test_placed_job_without_progress_is_placed_again_after_its_timeout() -> None:
    stuck = [shard(S.STARTED, since_s=0.0)]
    assert changes(run(29, nodes=[node()], jobs=[job(J.PLACED)], shards=stuck), "job") == []
    result = run(30, nodes=[node()], jobs=[job(J.PLACED)], shards=[shard(S.STARTED, since_s=25.0)])
    assert changes(result, "job") == [("placed", "pending")]


def test_shards_of_an_older_generation_do_not_fail_the_job() -> None:
    result = run(
        1,
        nodes=[node()],
        jobs=[JobView("j-1", J.RUNNING, 0, 1, 1)],
        shards=[shard(S.STOPPING, generation=0, reported="failed"), shard(S.RUNNING, generation=1)],
    )
    assert changes(result, "job") == []


def test_unknown_running_shards_are_stopped() -> None:
    reported = [
        ReportedShard("n", "old-3-0", 2, "running"),
        ReportedShard("n", "j-1-0", 0, "running"),
    ]
    result = run(1, nodes=[node()], jobs=[job()], shards=[shard(S.RUNNING)], reported=reported)
    assert [(s.shard_id, s.generation) for s in result.stops] == [("old-3-0", 2)]


def test_tables_refuse_what_they_do_not_list() -> None:
    with pytest.raises(IllegalTransition):
        next_phase(JOB_TRANSITIONS, J.DONE, JobEvent.RESTART)
    assert next_phase(JOB_TRANSITIONS, J.PENDING, JobEvent.PLACED) is J.PLACED
    terminal = {J.DONE, J.FAILED, J.CANCELLED}
    assert not any(old in terminal for old, _ in JOB_TRANSITIONS)
    assert not any(old.ended for old, _ in SHARD_TRANSITIONS)
    assert {new for new in NODE_TRANSITIONS.values()} <= set(N)


def test_timeouts_from_the_failsafe_timeout() -> None:
    t = Timeouts.for_failsafe(5.0)
    assert t.node_stale_s == t.node_unknown_s == 10.0
    assert Timeouts.for_failsafe(20.0).node_stale_s == 40.0
    assert t.job(J.PENDING) == float("inf") and t.shard(S.RUNNING) == float("inf")
