"""The controller tree: the parent's split of its watts (floors, value per watt, caps), its
grant plan (lowerings at once, raises only within its limit counting every child at the
larger of its grant and holding), and a tree of real shells in the simulator under cuts,
failures and controller restarts: no domain at any level over its limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
)
def test_no_domain_at_any_level_exceeds_its_limit(
    restart: bool, fail: str | None, cut_frac: float, seed: int
) -> None:
    tree = TreeSimulation(_site(restart, fail, cut_frac, seed), Path("."))
    for _ in tree.run():
        pass
    assert tree.result.over_s == 0.0
    for child in tree.children.values():
        assert child.result.limits_over_budget_s == 0.0, child.result.max_limits_over_budget_w
        assert child.result.domain_limits_over_s == 0.0, child.result.max_domain_limits_over_w
