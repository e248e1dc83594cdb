"""decide(): placement, idle minimums, hysteresis, lower-then-raise, stale GPUs, weights."""

from __future__ import annotations

from dataclasses import replace

import pytest

from greenllm.devices.catalog import get_spec
from greenllm.devices.physics import Workload
from scheduler.core.decide import decide
from scheduler.core.types import DecideConfig, GPUState, JobState, ObservedState
from scheduler.policies import load_policy

TRAIN = Workload("train", batch=8, model_params=1.3e9)
DECODE = Workload("decode", batch=32, model_params=7e9)


def cluster(limit_frac: float = 1.0) -> list[GPUState]:
    gpus = []
    for node, t in (("h", "H100-SXM"), ("a", "A100-SXM4"), ("l", "L4")):
        for i in range(4):
            gpus.append(GPUState(node, i, t, 0.0, 0.0, get_spec(t).max_power_limit_w * limit_frac))
    return gpus


def limits_after(gpus: list[GPUState], acts) -> dict[tuple[str, int], float]:  # type: ignore[no-untyped-def]
    new = {(c.node, c.index): c.power_limit_w for c in acts.power_limits}
    return {g.key: new.get(g.key, g.commanded_limit_w) for g in gpus}


def test_idle_gpus_get_their_minimum_limit() -> None:
    gpus = cluster()
    acts = decide(
        ObservedState(0, 2800, 100, tuple(gpus), ()), DecideConfig(), load_policy("uniform")
    )
    after = limits_after(gpus, acts)
    assert all(after[g.key] == get_spec(g.gpu_type).min_power_limit_w for g in gpus)
    assert not acts.placements


def test_gang_placement_respects_types_and_capacity() -> None:
    gpus = cluster()
    jobs = (
        JobState("big", "train", "pending", TRAIN, shards=5, allowed_gpu_types=("H100-SXM",)),
        JobState(
            "t",
            "train",
            "pending",
            TRAIN,
            shards=4,
            allowed_gpu_types=("A100-SXM4", "H100-SXM"),
            preferred_gpu_types=("A100-SXM4",),
        ),
        JobState("i", "infer", "pending", DECODE, shards=6, allowed_gpu_types=("H100-SXM", "L4")),
    )
    acts = decide(
        ObservedState(0, 2800, 100, tuple(gpus), jobs),
        DecideConfig(),
        load_policy("max-throughput"),
    )
    placed: dict[str, list[tuple[str, int]]] = {}
    for p in acts.placements:
        placed.setdefault(p.job_id, []).append((p.node, p.index))
    assert "big" not in placed  # only 4 H100s: all or nothing
    assert {n for n, _ in placed["t"]} == {"a"}  # preferred type
    assert len(placed["i"]) == 6 and {n for n, _ in placed["i"]} == {"h", "l"}
    weights = [w.weight for w in acts.load_weights if w.job_id == "i"]
    assert sum(weights) == pytest.approx(1.0) and len(weights) == 6


def test_cut_lowers_first_then_raises_after_acks() -> None:
    gpus = [replace(g, job_id="t", shard=g.index) if g.node == "h" else g for g in cluster(0.25)]
    gpus = [
        replace(g, acked_limit_w=get_spec(g.gpu_type).min_power_limit_w) if g.node != "h" else g
        for g in gpus
    ]
    jobs = (JobState("t", "train", "running", TRAIN, shards=4),)
    policy = load_policy("max-throughput")
    # the H100s are at 175 W: below their 200 W minimum; bring them in range is a raise
    obs = ObservedState(0, 2800, 100, tuple(gpus), jobs)
    acts = decide(obs, DecideConfig(), policy)
    assert acts.power_limits and all(c.power_limit_w > 175 for c in acts.power_limits)
    # now pretend the raise is in flight and a cut arrives: only lowerings, raises wait
    gpus = [
        replace(g, pending_limit_w=None, acked_limit_w=limits_after(gpus, acts)[g.key])
        for g in gpus
    ]
    cut = ObservedState(1, 1700, 100, tuple(gpus), jobs)
    acts = decide(cut, DecideConfig(), policy)
    assert acts.power_limits
    assert all(
        c.power_limit_w < limits_after(gpus, acts)[(c.node, c.index)] + 1e-9
        for c in acts.power_limits
    )
    assert sum(limits_after(gpus, acts).values()) <= 1600 + 1e-6
    assert not acts.notes
    # while those lowerings are unacked, a budget restore must not raise anything
    lowered = {(c.node, c.index): c.power_limit_w for c in acts.power_limits}
    gpus = [replace(g, pending_limit_w=lowered.get(g.key)) for g in gpus]
    restore = ObservedState(2, 2800, 100, tuple(gpus), jobs)
    acts = decide(restore, DecideConfig(), policy)
    assert all(
        c.power_limit_w <= g.commanded_limit_w
        for c in acts.power_limits
        for g in gpus
        if g.key == (c.node, c.index)
    )
    assert acts.raises_deferred
    # once acked, the raise goes out
    gpus = [replace(g, acked_limit_w=g.commanded_limit_w, pending_limit_w=None) for g in gpus]
    acts = decide(ObservedState(3, 2800, 100, tuple(gpus), jobs), DecideConfig(), policy)
    assert any(c.power_limit_w > 400 for c in acts.power_limits)
    assert not acts.raises_deferred


def test_hysteresis_holds_small_changes() -> None:
    gpus = [replace(g, job_id="t", shard=g.index) if g.node == "h" else g for g in cluster()]
    jobs = (JobState("t", "train", "running", TRAIN, shards=4),)
    policy = load_policy("uniform")
    first = decide(ObservedState(0, 2800, 100, tuple(gpus), jobs), DecideConfig(), policy)
    gpus = [replace(g, acked_limit_w=limits_after(gpus, first)[g.key]) for g in gpus]
    # a budget change worth 1 W per busy GPU changes nothing (inside the hold band)
    again = decide(ObservedState(1, 2804, 100, tuple(gpus), jobs), DecideConfig(), policy)
    assert not again.power_limits
    # a big one does
    bigger = decide(ObservedState(2, 3300, 100, tuple(gpus), jobs), DecideConfig(), policy)
    assert bigger.power_limits


def test_stale_gpus_count_at_their_commanded_maximum_and_get_no_command() -> None:
    gpus = cluster()
    gpus[0] = replace(gpus[0], stale=True, acked_limit_w=600.0, pending_limit_w=700.0)
    acts = decide(
        ObservedState(0, 2000, 100, tuple(gpus), ()), DecideConfig(), load_policy("uniform")
    )
    assert all((c.node, c.index) != gpus[0].key for c in acts.power_limits)
    after = limits_after(gpus, acts)
    assert sum(v for k, v in after.items() if k != gpus[0].key) + 700.0 <= 1900 + 1e-6


def test_infeasible_budget_goes_to_minimums_and_says_so() -> None:
    gpus = cluster()
    gpus[0] = replace(gpus[0], stale=True)  # 700 W counted
    acts = decide(
        ObservedState(0, 1700, 0, tuple(gpus), ()), DecideConfig(), load_policy("uniform")
    )
    assert acts.notes and "cannot cover" in acts.notes[0]
    after = limits_after(gpus, acts)
    assert all(after[g.key] == get_spec(g.gpu_type).min_power_limit_w for g in gpus[1:])
