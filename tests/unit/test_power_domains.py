"""Power domains: cluster.yaml validation (one line naming what and where), the tree's caps
(sums, fitting under every cap at once), fail-safe shares per domain, and the operator's
domain limit through the shell (refusals, persistence across a restart)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm import config as config_module
from greenllm.config import load_cluster_config, parse_cluster_config
from greenllm.errors import ConfigError
from greenllm.power_domains import DomainLayout, oversubscription
from scheduler.core.domains import Caps
from scheduler.shell import operator
from scheduler.shell.controller import ControllerShell
from scheduler.shell.errors import BadInput
from scheduler.shell.memstore import MemoryStore

REPO = Path(__file__).resolve().parents[2]


def cluster(tree: list[dict[str, Any]]) -> dict[str, Any]:
    """Four nodes (two H100 x 4, two A100 x 4) under ``tree``, budget 8,000 W."""
    nodes = [{"name": n, "gpus": [{"type": t, "count": 4}]} for n, t in NODES.items()]
    return {"nodes": nodes, "budget": {"budget_w": 8000}, "power_domains": tree}


NODES = {"h0": "H100-SXM", "h1": "H100-SXM", "a0": "A100-SXM4", "a1": "A100-SXM4"}
TREE = [
    {
        "name": "site",
        "limit_w": 8000,
        "domains": [
            {"name": "rack-h", "limit_w": 3000, "reserve_w": 100, "nodes": ["h*"]},
            {"name": "rack-a", "limit_w": 3500, "nodes": ["a0", "a1"]},
        ],
    }
]


def error_for(tmp_path: Path, tree: list[dict[str, Any]]) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(cluster(tree)))
    with pytest.raises(ConfigError) as info:
        load_cluster_config(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_the_tree_is_laid_out_over_the_nodes() -> None:
    cfg = parse_cluster_config(cluster(TREE))
    layout = cfg.domain_layout()
    assert layout.names == ("site", "rack-h", "rack-a")
    assert layout.parent == (-1, 0, 0)
    assert layout.usable_w == (8000, 2900, 3500)
    assert [layout.names[d] for d in layout.chain("h1")] == ["rack-h", "site"]
    assert sorted(layout.nodes_under(0)) == sorted(NODES)


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        (
            [{**TREE[0], "domains": [TREE[0]["domains"][0]]}],
            "node 'a0', 'a1' is in no power domain",
        ),
        (
            [{"name": "site", "limit_w": 8000, "nodes": ["h0", "x9", "a*"]}],
            "domain 'site' names node 'x9', which matches no node",
        ),
        (
            [
                {
                    "name": "site",
                    "limit_w": 8000,
                    "domains": [{"name": "r", "limit_w": 9e3, "nodes": ["*"]}],
                    "nodes": ["h0"],
                }
            ],
            "node 'h0' is in two domains",
        ),
        (
            [
                {
                    "name": "site",
                    "limit_w": 8000,
                    "domains": [{"name": "site", "limit_w": 9e3, "nodes": ["*"]}],
                }
            ],
            "duplicate domain names: site",
        ),
        (
            [
                {
                    "name": "site",
                    "limit_w": 8000,
                    "domains": [{"name": "r", "limit_w": 500, "nodes": ["*"]}],
                }
            ],
            "domain 'r' limit_w - reserve_w = 500 W is below the sum of its GPUs' minimum",
        ),
        (
            [{"name": "site", "limit_w": 100, "reserve_w": 100, "nodes": ["*"]}],
            "reserve_w 100 W is not below",
        ),
        (
            [{"name": "site", "limit_w": 8000, "nodes": ["*"], "breaker": 1}],
            "power_domains.0.breaker",
        ),
    ],
)
def test_a_bad_tree_is_one_line_naming_what(
    tmp_path: Path, tree: list[dict[str, Any]], expected: str
) -> None:
    assert expected in error_for(tmp_path, tree)


def test_oversubscription_is_allowed_and_reported() -> None:
    tree = [
        {
            "name": "site",
            "limit_w": 5000,
            "domains": [
                {"name": "rack-h", "limit_w": 6000, "nodes": ["h*"]},
                {"name": "rack-a", "limit_w": 3500, "nodes": ["a*"]},
            ],
        }
    ]
    cfg = parse_cluster_config(cluster(tree))
    lines = oversubscription(cfg.power_domains)
    assert any("'rack-h' limit 6000 W exceeds its parent 'site'" in line for line in lines)
    assert any("'site' is oversubscribed" in line for line in lines)


def test_boot_failsafe_shares_fit_every_domain() -> None:
    cfg = parse_cluster_config(cluster(TREE))
    layout = cfg.domain_layout()
    for at, name in enumerate(layout.names):
        total = sum(
            cfg.failsafe_limit_w(t, node=n) * 4
            for n, t in NODES.items()
            if n in layout.nodes_under(at)
        )
        assert total <= layout.usable_w[at] + 1e-6, name
    # without the node, only the cluster's share: more than the H100 rack allows
    assert 8 * cfg.failsafe_limit_w("H100-SXM") > 2900


def test_boot_failsafe_shares_scan_the_nodes_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked per GPU (the simulator's set-up, a shell's never-registered GPUs), the
    domains' range sums are summed once, not once per GPU (quadratic at 100,000 GPUs)."""
    nodes = [{"name": f"n{k}", "gpus": [{"type": "L4", "count": 8}]} for k in range(200)]
    tree = [{"name": "site", "limit_w": 120_000, "nodes": ["n*"]}]
    cfg = parse_cluster_config(
        {"nodes": nodes, "budget": {"budget_w": 120_000}, "power_domains": tree}
    )
    first = cfg.failsafe_limit_w("L4", node="n0")
    calls = 0
    real = config_module.get_spec

    def counting(gpu_type: str) -> Any:
        nonlocal calls
        calls += 1
        return real(gpu_type)

    monkeypatch.setattr(config_module, "get_spec", counting)
    shares = [cfg.failsafe_limit_w("L4", node=f"n{k}") for k in range(200)]
    assert shares == [first] * 200
    assert calls <= 2 * 200  # the GPU's own spec per call, no scan of 1,600 GPUs


@st.composite
def trees(draw: st.DrawFn) -> tuple[Caps, np.ndarray, np.ndarray]:
    n_caps = draw(st.integers(1, 6))
    parent = [-1] + [draw(st.integers(0, d - 1)) for d in range(1, n_caps)]
    n = draw(st.integers(1, 30))
    leaf = np.array([draw(st.integers(0, n_caps - 1)) for _ in range(n)], dtype=int)
    min_w = np.array([draw(st.floats(50, 300)) for _ in range(n)])
    target = min_w + np.array([draw(st.floats(0, 600)) for _ in range(n)])
    caps = Caps(tuple(f"d{i}" for i in range(n_caps)), np.array(parent), np.zeros(n_caps), leaf)
    floors = caps.totals(min_w)
    cap_w = floors + np.array([draw(st.floats(0, 2000)) for _ in range(n_caps)])
    return Caps(caps.names, caps.parent, cap_w, leaf), target, min_w


@settings(max_examples=200, deadline=None)
@given(trees())
def test_fitting_holds_every_cap_and_only_lowers(case: tuple[Caps, np.ndarray, np.ndarray]) -> None:
    caps, target, min_w = case
    fitted, infeasible = caps.fit(target, min_w)
    assert not infeasible
    assert (caps.totals(fitted) <= caps.cap_w + 1e-6).all()
    assert (fitted <= target + 1e-9).all() and (fitted >= min_w - 1e-9).all()
    untouched = ~caps.under_any(caps.over(target))
    assert np.allclose(fitted[untouched], target[untouched])  # caps that held cut nothing


def test_totals_sum_descendants_level_by_level() -> None:
    layout = DomainLayout(
        ("site", "row", "rack"), (-1, 0, 1), (1e4, 1e4, 1e4), (("a", 2), ("b", 1), ("c", 0))
    )
    caps = Caps.build(layout, 5e4, ["a", "a", "b", "c", "x"])
    assert caps.totals(np.array([1.0, 2.0, 4.0, 8.0, 16.0])).tolist() == [31.0, 15.0, 7.0, 3.0]
    assert caps.members(2).tolist() == [0, 1, 2]


def shell(store: MemoryStore) -> ControllerShell:
    return ControllerShell(
        parse_cluster_config(cluster(TREE)), store, clock=lambda: 0.0, wall_clock=lambda: 0.0
    )


def test_a_domain_limit_is_set_persisted_and_refused_when_impossible() -> None:
    store = MemoryStore()
    first = shell(store)
    assert operator.set_domain_limit(first, "rack-h", 2500.0, None) == (2500.0, 100.0)
    assert first.domains is not None and first.domains.usable_w[1] == 2400.0
    for name, limit_w, code in (
        ("rack-x", 2000.0, grpc.StatusCode.NOT_FOUND),
        ("rack-h", float("nan"), grpc.StatusCode.INVALID_ARGUMENT),
        ("rack-h", 500.0, grpc.StatusCode.FAILED_PRECONDITION),
    ):
        with pytest.raises(BadInput) as info:
            operator.set_domain_limit(first, name, limit_w, None)
        assert info.value.code == code
    again = shell(store)  # a restarted controller keeps the operator's limit
    assert again.domain_limits_w["rack-h"] == (2500.0, 100.0)


def test_status_metrics_and_events_show_a_binding_rack() -> None:
    """Three racks, the H100 one on a 3,000 W feed under jobs that want more: status shows
    it bound and within its limit, metrics carry it, an event says it binds."""
    from scheduler.policies import load_policy
    from scheduler.server.metrics import status_metrics
    from scheduler.shell.status import cluster_status
    from scheduler.sim.engine import Simulation
    from tests.unit.test_domain_properties import _three_racks

    sim = Simulation(_three_racks(True), Path("."), load_policy("max-throughput"), "mt")
    for _ in range(60):
        sim.step()
    assert sim.shell is not None
    status = cluster_status(sim.shell)
    by_name = {d.name: d for d in status.domains}
    assert [d.name for d in status.domains] == ["site", "rack-h", "rack-a", "rack-l"]
    rack_h = by_name["rack-h"]
    assert rack_h.parent == "site" and rack_h.gpus == 8 and rack_h.limit_w == 3000
    assert rack_h.bound and rack_h.accounted_power_limit_w <= 3000 + 1e-6
    assert by_name["site"].gpus == 24
    families = {f.name: f for f in status_metrics(status)}
    held = {
        s.labels["domain"]: s.value
        for s in families["greenllm_domain_accounted_power_limit_watts"].samples
    }
    assert held["rack-h"] == rack_h.accounted_power_limit_w
    bound = {s.labels["domain"]: s.value for s in families["greenllm_domain_bound"].samples}
    assert bound["rack-h"] == 1.0
    events = [e for e in sim.store.event_log if e.kind == "domain-bound"]
    assert any("domain rack-h binds" in e.message for e in events)


def test_placement_prefers_the_domain_with_headroom() -> None:
    """Two racks of H100 nodes; rack-a's feed is nearly taken by a running job, rack-b has
    room: a new job goes to rack-b, though rack-a's node has more free GPUs (without the
    tree it packs there)."""
    from greenllm.devices.physics import Workload
    from scheduler.core.decide import decide
    from scheduler.core.types import DecideConfig, GPUState, JobState, ObservedState
    from scheduler.policies import load_policy

    train = Workload("train", batch=8, model_params=1.3e9)
    gpus = [
        GPUState(
            "a0",
            i,
            "H100-SXM",
            0.0,
            0.0,
            600.0 if i < 2 else 200.0,
            job_id="busy" if i < 2 else None,
        )
        for i in range(8)
    ] + [GPUState("b0", i, "H100-SXM", 0.0, 0.0, 200.0) for i in range(4)]
    jobs = (
        JobState("busy", "train", "running", train, shards=2),
        JobState("new", "train", "pending", train, shards=2),
    )
    layout = DomainLayout(("rack-a", "rack-b"), (-1, -1), (2500.0, 2800.0), (("a0", 0), ("b0", 1)))
    for domains, expect in ((None, "a0"), (layout, "b0")):
        acts = decide(
            ObservedState(0, 5000, 0, tuple(gpus), jobs, domains=domains),
            DecideConfig(),
            load_policy("max-throughput"),
        )
        assert {p.node for p in acts.placements if p.job_id == "new"} == {expect}
