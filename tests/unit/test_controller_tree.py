"""The controller tree: the parent's split of its watts (floors, value per watt, caps), its
grant plan (lowerings at once, raises only within its limit counting every child at the
larger of its grant and holding), and a tree of real shells in the simulator under cuts,
failures and controller restarts: no domain at any level over its limit."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.core.demand import DemandCurve
from scheduler.sim.scenario import Scenario
from scheduler.tree.parent import ChildReport, ParentController, allocate_grants, plan_grants
from scheduler.tree.sim import TreeSimulation


def curve(floor_w: float, *steps: tuple[float, float]) -> DemandCurve:
    watts, value = [floor_w], [0.0]
    for dw, dv in steps:
        watts.append(watts[-1] + dw)
        value.append(value[-1] + dv)
    return DemandCurve(tuple(watts), tuple(value))


def test_watts_go_where_they_add_most_value_within_each_childs_cap() -> None:
    steep = curve(100, (200, 2.0), (200, 0.5))  # 0.01 then 0.0025 per W
    flat = curve(100, (400, 1.6))  # 0.004 per W
    grants = allocate_grants([steep, flat], [10_000, 10_000], 500)
    assert grants == [300, 200]  # floors, the steep child's first 200 W, then the flat one
    capped = allocate_grants([steep, flat], [250, 10_000], 500)
    assert capped == [250, 250]
    assert allocate_grants([steep, flat], [10_000, 10_000], 900) == [400, 500]
    spare = allocate_grants([steep, flat], [700, 700], 1300)
    assert sum(spare) == 1300 and spare[0] <= 700 and spare[1] <= 700  # spread beyond demand


def test_floors_come_first_even_when_they_do_not_fit() -> None:
    assert allocate_grants([curve(400), curve(500)], [1000, 1000], 600) == [400, 500]


def test_raises_wait_for_lowered_children_to_come_down() -> None:
    # child 0 lowered from 600 to 300 but still holds 600: child 1 may not rise yet
    new = plan_grants([600, 300], [600, 300], [300, 600], 900)
    assert new == [300, 300]
    # once it holds 300, child 1 rises
    assert plan_grants(new, [300, 300], [300, 600], 900) == [300, 600]


@st.composite
def rounds(draw: st.DrawFn) -> tuple[list[float], list[float], list[float], float]:
    n = draw(st.integers(2, 6))
    usable = draw(st.floats(500, 5000))
    held = [draw(st.floats(0, usable / n)) for _ in range(n)]
    granted = [max(h, draw(st.floats(0, usable / n))) for h in held]
    target = [draw(st.floats(0, usable)) for _ in range(n)]
    return granted, held, target, usable


@settings(max_examples=300, deadline=None)
@given(rounds())
def test_a_plan_never_lets_the_children_exceed_the_parent(
    case: tuple[list[float], list[float], list[float], float],
) -> None:
    granted, held, target, usable = case
    new = plan_grants(granted, held, target, usable)
    assert sum(max(n, h) for n, h in zip(new, held, strict=True)) <= usable + 1e-6
    for n, g, t in zip(new, granted, target, strict=True):
        assert n <= max(g, t) + 1e-9  # never more than asked or held
        if t <= g:
            assert n == t  # lowerings go out at once


def test_a_silent_child_keeps_its_grant_and_counts_at_it() -> None:
    parent = ParentController(["a", "b"], [1000, 1000], 1000, [500, 500])
    # a reports nothing; b wants everything: b may not take a's watts
    changed = parent.step({"b": ChildReport(400, curve(100, (900, 1.0)))})
    assert parent.grants_w[0] == 500 and parent.grants_w[1] <= 500
    assert "a" not in changed


def _site(restart: bool, fail: str | None, cut_frac: float, seed: int) -> Scenario:
    nodes: list[dict[str, Any]] = []
    rows = []
    for r in range(2):
        racks = []
        for k in range(2):
            names = [f"r{r}k{k}n{i}" for i in range(2)]
            gpu = "H100-SXM" if (r + k) % 2 == 0 else "A100-SXM4"
            nodes += [{"name": n, "gpus": [{"type": gpu, "count": 2}]} for n in names]
            full = 4 * (700 if gpu == "H100-SXM" else 400)
            racks.append({"name": f"rack{r}.{k}", "limit_w": 0.8 * full, "nodes": names})
        rows.append(
            {"name": f"row{r}", "limit_w": 0.9 * sum(d["limit_w"] for d in racks), "domains": racks}
        )
    total = sum(d["limit_w"] for d in rows)
    jobs = [
        {
            "name": f"t{g}",
            "kind": "train",
            "shards": 2,
            "gpu_types": [t],
            "train": {"seq_len": 2048},
            "sim": {"count": 4},
        }
        for g, t in (("h", "H100-SXM"), ("a", "A100-SXM4"))
    ]
    failures = []
    if fail is not None:
        failures.append({"node": "r0k0n0", "kind": fail, "at_s": 2.0, "recover_s": 5.0})
    return Scenario.model_validate(
        {
            "duration_s": 10.0,
            "seed": seed,
            "nodes": nodes,
            "budget": {"budget_w": total, "schedule": [{"t_s": 4.0, "budget_w": cut_frac * total}]},
            "power_domains": [{"name": "site", "limit_w": 0.95 * total, "domains": rows}],
            "jobs": jobs,
            "failures": failures,
            "controller_restarts": [{"at_s": 3.0, "down_s": 1.0}] if restart else [],
            "control": {
                "stale_after_s": 0.8,
                "failsafe_timeout_s": 1.0,
                "lost_after_s": 2.0,
                "ack_delay_s": 0.2,
            },
        }
    )


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.booleans(),
    st.sampled_from([None, "crash", "partition", "agent_crash"]),
    st.floats(0.45, 1.0),
    st.integers(0, 100),
    st.one_of(st.none(), st.tuples(st.floats(1.0, 6.0), st.floats(0.5, 4.0))),
)
def test_no_domain_at_any_level_exceeds_its_limit(
    restart: bool,
    fail: str | None,
    cut_frac: float,
    seed: int,
    parent_outage: tuple[float, float] | None,
) -> None:
    """Child controllers restart (``restart``), the parent may be down across the cut."""
    outages = [parent_outage] if parent_outage else []
    tree = TreeSimulation(_site(restart, fail, cut_frac, seed), Path("."), parent_outages=outages)
    for _ in tree.run():
        pass
    assert tree.result.over_s == 0.0
    for child in tree.children.values():
        assert child.result.limits_over_budget_s == 0.0, child.result.max_limits_over_budget_w
        assert child.result.domain_limits_over_s == 0.0, child.result.max_domain_limits_over_w


def test_a_cut_while_the_parent_is_down_is_carried_out_once_it_is_back() -> None:
    tree = TreeSimulation(_site(False, None, 0.5, 1), Path("."), parent_outages=[(3.0, 4.0)])
    for _ in tree.run():
        pass
    r = tree.result
    assert r.over_s == 0.0  # the outage holds the transition open
    back_s = 7.0 + tree.window_s
    after = [w for t, w, u in zip(r.times_s, r.held_w, r.usable_w, strict=True) if t >= back_s]
    assert after and max(after) <= r.usable_w[-1] + 1e-6
    during = [w for t, w in zip(r.times_s, r.held_w, strict=True) if 4.5 <= t < 7.0]
    assert max(during) > r.usable_w[-1]  # nobody carried it out while the parent was down


@pytest.fixture
def quieted_loggers() -> Iterator[None]:
    """``greenllm sim`` quiets the controller's loggers, as fits a process of its own: put
    them back for the tests that follow in this one."""
    loggers = [logging.getLogger(name) for name in ("scheduler", "workers")]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.mark.usefixtures("quieted_loggers")
def test_sim_runs_a_controller_tree_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from greenllm.cli.main import main

    scenario = tmp_path / "rows.yaml"
    doc = _site(False, None, 0.6, 3).model_dump(mode="json", exclude_none=True)
    scenario.write_text(yaml.safe_dump(doc))
    out_dir = tmp_path / "o"
    assert main(["sim", str(scenario), "--controller-tree", "--out", str(out_dir), "--json"]) == 0
    tree = json.loads(capsys.readouterr().out)
    assert set(tree["children"]) == {"row0", "row1"} and tree["parent"]["over_s"] == 0
    assert [c["t_s"] for c in tree["parent"]["cuts"]] == [4.0]
    assert json.loads((out_dir / "tree.json").read_text()) == tree
    both = [
        "sim",
        str(scenario),
        "--controller-tree",
        "--compare",
        "uniform",
        "--out",
        str(out_dir),
    ]
    assert main(both) != 0
    assert "not both" in capsys.readouterr().err
