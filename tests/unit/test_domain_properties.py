"""The budget invariant per power domain, through the production shell (in-memory transport).

Random trees (a site over racks, sometimes rows between), random domain limits (children may
oversubscribe their parent), cuts of any domain and of the cluster budget, crashed,
partitioned and dead agents, GPUs that refuse lowerings, and controller restarts: for every
domain, the limits its GPUs *really* hold never sum above its limit - reserve outside the
transition window after a change (:func:`scheduler.sim.plane.transition_window_s`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenllm.devices.catalog import get_spec
from scheduler.policies import load_policy
from scheduler.sim.engine import Simulation
from scheduler.sim.scenario import Scenario
from tests.unit.shellkit import CONTROL
from tests.unit.test_sim_properties import _floor_w

TYPES = ["H100-SXM", "A100-SXM4", "L4", "A40"]
DURATION_S = 12.0
RESERVE_W = 10.0


def _top_w(nodes: list[dict[str, Any]]) -> float:
    return sum(
        get_spec(n["gpus"][0]["type"]).max_power_limit_w * n["gpus"][0]["count"] for n in nodes
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    nodes = [
        {
            "name": f"n{k}",
            "gpus": [{"type": draw(st.sampled_from(TYPES)), "count": draw(st.integers(1, 3))}],
        }
        for k in range(draw(st.integers(3, 5)))
    ]
    refuse: dict[str, float] = {}
    failures: list[dict[str, Any]] = []
    victim = nodes[draw(st.integers(0, len(nodes) - 1))]["name"]
    kind = draw(st.sampled_from(["none", "crash", "partition", "agent_crash", "refuse_lowering"]))
    at_s = draw(st.floats(0.5, 6.0))
    if kind in ("crash", "partition", "agent_crash"):
        recover_s = at_s + draw(st.floats(0.3, 5.0))
        failures.append({"node": victim, "kind": kind, "at_s": at_s, "recover_s": recover_s})
    elif kind == "refuse_lowering":
        spec = get_spec(next(n for n in nodes if n["name"] == victim)["gpus"][0]["type"])
        below = spec.min_power_limit_w + draw(st.floats(0.1, 0.6)) * (
            spec.max_power_limit_w - spec.min_power_limit_w
        )
        refuse[victim] = below
        failures.append({"node": victim, "kind": kind, "at_s": at_s, "below_w": below})

    def limit_w(members: list[dict[str, Any]]) -> float:
        floor = _floor_w(members, refuse) + RESERVE_W
        top = _top_w(members) + RESERVE_W
        return floor + draw(st.floats(0.0, 1.1)) * (top - floor) + 1.0

    n_racks = draw(st.integers(2, 3))
    owner = [k % n_racks for k in range(len(nodes))]
    owner = draw(st.permutations(owner))
    racks = []
    for r in range(n_racks):
        members = [n for n, o in zip(nodes, owner, strict=True) if o == r]
        racks.append(
            {
                "name": f"rack{r}",
                "limit_w": limit_w(members),
                "reserve_w": RESERVE_W,
                "nodes": [n["name"] for n in members],
            }
        )
    children: list[dict[str, Any]] = racks
    if draw(st.booleans()):  # a row over the first two racks
        row_members = [n for n, o in zip(nodes, owner, strict=True) if o < 2]
        row = {"name": "row0", "limit_w": limit_w(row_members), "reserve_w": RESERVE_W}
        children = [{**row, "domains": racks[:2]}, *racks[2:]]
    site = {"name": "site", "limit_w": limit_w(nodes), "reserve_w": RESERVE_W, "domains": children}
    names = ["site", *(r["name"] for r in racks)] + (["row0"] if children is not racks else [])
    members_of = {r["name"]: [n for n in nodes if n["name"] in r["nodes"]] for r in racks}
    members_of["site"] = nodes
    members_of["row0"] = [n for n, o in zip(nodes, owner, strict=True) if o < 2]

    schedule: list[dict[str, Any]] = []
    sum_tdp = sum(get_spec(n["gpus"][0]["type"]).tdp_w * n["gpus"][0]["count"] for n in nodes)
    lo = min(1.0, (_floor_w(nodes, refuse) + RESERVE_W) / sum_tdp + 0.01)
    for _ in range(draw(st.integers(0, 3))):
        t_s = draw(st.floats(0.5, 10.0))
        domain = draw(st.sampled_from([None, *names]))
        if domain is None:
            schedule.append({"t_s": t_s, "frac_of_tdp": draw(st.floats(lo, 1.0))})
        else:
            schedule.append({"t_s": t_s, "domain": domain, "budget_w": limit_w(members_of[domain])})
    jobs = [
        {
            "name": f"t{j}",
            "kind": "train",
            "shards": draw(st.integers(1, 3)),
            "train": {"seq_len": 2048},
            "sim": {"arrive_s": draw(st.sampled_from([0.0, 2.0]))},
        }
        for j in range(draw(st.integers(1, 3)))
    ]
    restarts = []
    if draw(st.booleans()):
        restarts.append({"at_s": draw(st.floats(0.5, 8.0)), "down_s": draw(st.floats(0.0, 3.0))})
    return Scenario.model_validate(
        {
            "duration_s": DURATION_S,
            "seed": draw(st.integers(0, 1000)),
            "nodes": nodes,
            "budget": {
                "frac_of_tdp": draw(st.floats(lo, 1.0)),
                "reserve_w": RESERVE_W,
                "schedule": schedule,
            },
            "power_domains": [site],
            "jobs": jobs,
            "failures": failures,
            "controller_restarts": restarts,
            "control": {
                **CONTROL,  # fast staleness, fail-safe and loss, as the shell's unit tests
                "ack_delay_s": draw(st.sampled_from([0.0, 0.2, 0.7])),
                "telemetry_delay_s": draw(st.sampled_from([0.0, 0.1, 0.3])),
            },
        }
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from(["uniform", "max-throughput", "min-energy", "priority"]))
def test_no_domain_ever_holds_more_than_its_limit(sc: Scenario, policy: str) -> None:
    sim = Simulation(sc, Path("."), load_policy(policy), policy)
    result = sim.run()
    assert result.limits_over_budget_s == 0.0, result.max_limits_over_budget_w
    assert result.domain_limits_over_s == 0.0, result.max_domain_limits_over_w


def _three_racks(power_domains: bool) -> Scenario:
    """Three racks of two nodes x 4 GPUs (H100, A100, L4 racks); the site budget fits every
    job at full power, the H100 rack's 3,000 W feed does not (8 H100 at full power: 5,600 W)."""
    racks = {"h": "H100-SXM", "a": "A100-SXM4", "l": "L4"}
    nodes = [
        {"name": f"{r}{i}", "gpus": [{"type": t, "count": 4}]}
        for r, t in racks.items()
        for i in range(2)
    ]
    tree = [
        {
            "name": "site",
            "limit_w": 9000,
            "domains": [
                {"name": "rack-h", "limit_w": 3000, "nodes": ["h*"]},
                {"name": "rack-a", "limit_w": 3500, "nodes": ["a*"]},
                {"name": "rack-l", "limit_w": 1000, "nodes": ["l*"]},
            ],
        }
    ]
    jobs = [
        {
            "name": f"t{r}{i}",
            "kind": "train",
            "shards": 4,
            "gpu_types": [t],
            "train": {"seq_len": 2048},
        }
        for r, t in racks.items()
        for i in range(2)
    ]
    return Scenario.model_validate(
        {
            "duration_s": 10.0,
            "nodes": nodes,
            "budget": {"budget_w": 9000},
            "power_domains": tree if power_domains else [],
            "jobs": jobs,
        }
    )


def _rack_h_limits_w(sim: Simulation) -> float:
    return sum(sim.nodes[n].real_limits_w() for n in ("h0", "h1"))


def test_a_site_budget_that_fits_does_not_trip_a_rack_that_does_not() -> None:
    """Without domains (the controller before power domains) the H100 rack is given more
    than its 3,000 W feed while the site total is within budget; with them it never is."""
    worst = {}
    for with_tree in (False, True):
        sim = Simulation(_three_racks(with_tree), Path("."), load_policy("max-throughput"), "mt")
        seen = []
        for _ in range(int(10.0 / sim.plane.step_s)):
            sim.step()
            seen.append(_rack_h_limits_w(sim))
        worst[with_tree] = max(seen)
        assert sim.result.limits_over_budget_s == 0.0
        if with_tree:
            assert sim.result.domain_limits_over_s == 0.0
    assert worst[False] > 3000.0  # the rack trips without the tree
    assert worst[True] <= 3000.0 + 1e-6


def test_the_shipped_example_cuts_a_rack_and_holds_every_domain() -> None:
    from scheduler.sim.scenario import load_scenario

    repo = Path(__file__).resolve().parents[2]
    sc, base = load_scenario(repo / "examples" / "scenarios" / "power-domains.yaml")
    sim = Simulation(sc, base, load_policy(sc.policy), sc.policy)
    rack_a = []
    for _ in range(int(sc.duration_s / sim.plane.step_s)):
        sim.step()
        rack_a.append((sim.clock.t_s, sum(sim.nodes[n].real_limits_w() for n in ("a-0", "a-1"))))
    result = sim.result
    assert result.domain_limits_over_s == 0.0 and result.limits_over_budget_s == 0.0
    during = [w for t, w in rack_a if 20.0 + sim.window_s <= t < 40.0]
    assert during and max(during) <= 2000.0 + 1e-6
    assert max(w for t, w in rack_a if t < 20.0) > 2000.0  # the cut changed something
