"""Router: smooth weighted round robin in proportion to replica throughput."""

from __future__ import annotations

from collections import Counter

import pytest

from workers.shards.router import NoReplicaError, Router


def picks(router: Router, n: int) -> Counter[str]:
    return Counter(router.pick() for _ in range(n))


def test_shares_follow_weights_exactly_over_a_full_cycle() -> None:
    router = Router({"h100": 300.0, "a100": 150.0, "l4": 50.0})
    assert picks(router, 1000) == {"h100": 600, "a100": 300, "l4": 100}


def test_picks_of_a_heavy_replica_are_spread_out() -> None:
    router = Router({"a": 3.0, "b": 1.0})
    sequence = [router.pick() for _ in range(8)]
    assert sequence.count("b") == 2
    assert "b" in sequence[:4] and "b" in sequence[4:]


def test_every_window_is_within_one_request_of_its_share() -> None:
    router = Router({"a": 5.0, "b": 3.0, "c": 2.0})
    seen: Counter[str] = Counter()
    for i in range(1, 201):
        seen[router.pick()] += 1
        for replica, weight in {"a": 0.5, "b": 0.3, "c": 0.2}.items():
            assert abs(seen[replica] - weight * i) <= 1.0


def test_weights_update_at_runtime() -> None:
    router = Router({"a": 1.0, "b": 1.0})
    assert picks(router, 100) == {"a": 50, "b": 50}
    router.set_weight("b", 3.0)
    shares = picks(router, 400)
    assert shares["b"] == pytest.approx(300, abs=2)
    router.set_weight("c", 4.0)
    assert picks(router, 800)["c"] == pytest.approx(400, abs=2)


def test_zero_weight_and_removed_replicas_get_nothing() -> None:
    router = Router({"a": 1.0, "b": 1.0, "c": 1.0})
    router.pick()
    router.set_weight("b", 0.0)
    router.remove("c")
    assert picks(router, 50) == {"a": 50}
    assert router.weights() == {"a": 1.0, "b": 0.0}


def test_no_replica_raises() -> None:
    with pytest.raises(NoReplicaError):
        Router().pick()
    with pytest.raises(NoReplicaError):
        Router({"a": 0.0}).pick()


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_bad_weight_rejected(weight: float) -> None:
    with pytest.raises(ValueError):
        Router({"a": weight})
