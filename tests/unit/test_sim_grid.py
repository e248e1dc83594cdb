"""The grid signal through the simulator (the controller's own shell): per-job gCO2e
integrated interval by interval, a budget that follows the signal and never lets the GPUs
hold more than the budget in force (beyond the transition window), a signal that runs out."""

from __future__ import annotations

import bisect
import csv
import json
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
from click.testing import CliRunner

from greenllm.errors import ConfigError
from scheduler.commands import sim as sim_command
from scheduler.policies import load_policy
from scheduler.shell.status import cluster_status
from scheduler.sim.engine import Simulation
from scheduler.sim.scenario import Scenario, load_scenario

NODES = [
    {"name": "h", "gpus": [{"type": "H100-SXM", "count": 2}]},
    {"name": "a", "gpus": [{"type": "A100-SXM4", "count": 2}]},
]
JOBS = [
    {
        "name": "t7",
        "kind": "train",
        "shards": 2,
        "gpu_types": ["H100-SXM"],
        "simulated_model_params": 7e9,
        "train": {"batch_size": 8, "seq_len": 2048},
    },
    {
        "name": "t3",
        "kind": "train",
        "shards": 2,
        "gpu_types": ["A100-SXM4"],
        "simulated_model_params": 3e9,
        "train": {"batch_size": 8, "seq_len": 2048},
    },
]
PUE = 1.2  # the carbon section's default


def write_signal(path: Path, times: list[float], values: list[float], prices: list[float]) -> Path:
    rows = [f"{t:g},{v:g},{p:g}" for t, v, p in zip(times, values, prices, strict=True)]
    path.write_text("t,gco2e_per_kwh,price_per_kwh\n" + "\n".join(rows) + "\n")
    return path


def scenario(
    signal: Path, duration_s: float, follow: dict[str, Any] | None, **more: Any
) -> Scenario:
    budget: dict[str, Any] = {"budget_w": 1800, "reserve_w": 50}
    if follow is not None:
        budget["follow"] = follow
    doc = {
        "name": "grid",
        "duration_s": duration_s,
        "nodes": NODES,
        "budget": budget,
        "jobs": JOBS,
        "signal_file": str(signal),
        **more,
    }
    return Scenario.model_validate(doc)


def simulate(sc: Scenario, policy: str = "max-throughput") -> Simulation:
    sim = Simulation(sc, Path("."), load_policy(policy), policy)
    sim.run()
    return sim


FOLLOW = {"floor_w": 900, "ceiling_w": 2000, "points": [[100, 2000], [600, 900]]}


def test_the_budget_follows_each_interval_within_a_control_period(tmp_path: Path) -> None:
    times = [0.0, 6.0, 12.0, 18.0, 24.0]
    values = [550.0, 300.0, 120.0, 90.0, 450.0]
    signal = write_signal(tmp_path / "s.csv", times, values, [0.2] * 5)
    sim = simulate(scenario(signal, 29, FOLLOW))
    period_s = sim.plane.control_period_s
    changes = sim.result.budget_changes
    expected = [min(2000, max(900, 2000 - (v - 100) * 1100 / 500)) for v in values]
    for start, want in zip(times, expected, strict=True):
        near = [w for t, w in changes if start - 1e-9 <= t <= start + period_s + 1e-9]
        assert near and near[-1] == pytest.approx(want), (start, want, changes)
    summary = sim.result.summary(None)
    assert summary["limits_over_budget_s"] == 0
    assert summary["budget_violation_after_transition_s"] == 0
    assert sim.shell is not None
    status = cluster_status(sim.shell)
    assert status.budget_w == pytest.approx(expected[-1])
    assert status.grid_gco2e_per_kwh == 450.0
    assert status.grid_price_per_kwh == 0.2
    assert "follows intensity" in status.budget_follow
    assert "450 gCO2e/kWh -> " in status.budget_follow
    events = [e.kind for e in sim.store.events(None, 1000)]
    assert events.count("budget-follow") == len(times)


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_limits_never_exceed_a_budget_that_follows_a_random_signal(
    tmp_path: Path, seed: int
) -> None:
    """Property: whatever the signal (steps of random length and size), the map (linear
    or table, intensity or price) and the policy, the limits the GPUs really hold stay
    within the budget in force, but for the transition window after each cut."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 9))
    step_s = float(rng.uniform(2.0, 5.0))
    times = [round(i * step_s, 1) for i in range(n)]
    values = [float(v) for v in rng.uniform(20, 900, n).round()]
    prices = [float(p) for p in rng.uniform(0.01, 0.5, n).round(3)]
    signal = write_signal(tmp_path / "s.csv", times, values, prices)
    which = "intensity" if seed % 2 else "price"
    top = 900.0 if which == "intensity" else 0.5
    follow = {
        "signal": which,
        "floor_w": 800,
        "ceiling_w": 2200,
        "map": "table" if seed % 3 == 0 else "linear",
        "points": [[0, 2200], [top / 3, 1600], [top, 800]],
    }
    policy = ["max-throughput", "min-energy"][seed % 2]
    sim = simulate(scenario(signal, times[-1] + step_s, follow), policy)
    summary = sim.result.summary(None)
    assert len(sim.result.budget_changes) >= 2  # it followed
    assert summary["limits_over_budget_s"] == 0, summary["max_limits_over_budget_w"]
    assert summary["budget_violation_after_transition_s"] == 0


def test_job_gco2e_is_the_integral_over_the_intervals(tmp_path: Path) -> None:
    """What the controller books per job equals its GPUs' energy in each interval times
    that interval's intensity (from the trace), not its energy times one average."""
    times = [0.0, 5.0, 10.0, 15.0]
    values = [900.0, 60.0, 700.0, 80.0]
    prices = [0.40, 0.05, 0.30, 0.04]
    signal = write_signal(tmp_path / "s.csv", times, values, prices)
    follow = {"floor_w": 900, "ceiling_w": 2000, "points": [[60, 2000], [900, 900]]}
    sc = scenario(signal, 20, follow)
    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps(sc.model_dump(mode="json", exclude_none=True)))
    out = tmp_path / "out"
    cli = click.Group()
    sim_command.register(cli)
    result = CliRunner().invoke(cli, ["sim", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    jobs = list(summary["co2e_g"])
    integral, early, cost, early_cost, energy = ({j: 0.0 for j in jobs} for _ in range(5))
    with (out / "trace.csv").open() as f:
        rows = list(csv.DictReader(f))
    dt = 0.1  # the scenario's step_s, one trace row per GPU per step
    # the controller books the energy its counters show: from its first reading after
    # placement to its last telemetry, each up to ~2 control periods off the trace's ends
    lag_s = 2 * sc.control.control_period_s + sc.control.telemetry_delay_s + dt
    for row in rows:
        if not row["job"]:
            continue
        t = float(row["t"])
        at = bisect.bisect_right(times, t - dt / 2) - 1
        kwh = float(row["power_w"]) * dt / 3.6e6 * PUE
        integral[row["job"]] += kwh * values[at]
        cost[row["job"]] += kwh * prices[at]
        energy[row["job"]] += kwh
        if lag_s <= t <= sc.duration_s - lag_s:
            early[row["job"]] += kwh * values[at]
            early_cost[row["job"]] += kwh * prices[at]
    average = sum(values) / len(values)
    for job in jobs:
        booked, booked_cost = summary["co2e_g"][job], summary["energy_cost"][job]
        assert 0.99 * early[job] <= booked <= 1.01 * integral[job]
        assert 0.99 * early_cost[job] <= booked_cost <= 1.01 * cost[job]
        # one average over the run is visibly wrong here (the budget followed the signal)
        assert abs(energy[job] * average - integral[job]) > 0.1 * integral[job], (
            energy[job] * average,
            integral[job],
            early[job],
            booked,
        )


def test_a_signal_that_runs_out_holds_its_last_value_and_says_so(tmp_path: Path) -> None:
    signal = write_signal(tmp_path / "s.csv", [0.0, 4.0, 8.0], [500.0, 100.0, 300.0], [1, 1, 1])
    sim = simulate(scenario(signal, 20, FOLLOW))  # runs out at 12 s
    assert sim.shell is not None
    changes = sim.result.budget_changes
    last_w = min(2000, max(900, 2000 - 200 * 1100 / 500))
    assert changes[-1][1] == pytest.approx(last_w)
    assert all(t < 12.0 + sim.plane.control_period_s for t, _ in changes)  # it held on
    status = cluster_status(sim.shell)
    assert "ran out at" in status.grid_signal and "holding its last value" in status.grid_signal
    assert status.grid_gco2e_per_kwh == 300.0
    kinds = [e.kind for e in sim.store.events(None, 1000)]
    assert kinds.count("signal-ran-out") == 1
    for job in status.jobs:  # jobs went on being booked at the last value
        assert job.co2e_g > 0


def test_books_survive_a_controller_restart(tmp_path: Path) -> None:
    signal = write_signal(tmp_path / "s.csv", [0.0, 5.0, 10.0], [400.0, 100.0, 300.0], [1, 1, 1])
    plain = simulate(scenario(signal, 16, None))
    restarted = simulate(
        scenario(signal, 16, None, controller_restarts=[{"at_s": 11.0, "down_s": 1.0}])
    )
    for job, booked in plain.result.co2e_g.items():
        # the restarted controller took its books back (not 0, not re-booked from scratch)
        assert restarted.result.co2e_g[job] == pytest.approx(booked, rel=0.1)


def test_follow_without_a_signal_and_bad_signal_files_are_one_line(tmp_path: Path) -> None:
    doc = {
        "duration_s": 10,
        "nodes": NODES,
        "budget": {"budget_w": 1800, "follow": FOLLOW},
        "jobs": JOBS,
    }
    path = tmp_path / "sc.yaml"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"sc\.yaml: budget.follow needs signal_file"):
        load_scenario(path)
    (tmp_path / "bad.csv").write_text("t,gco2e_per_kwh\n0,1\n5,nan\n")
    path.write_text(json.dumps({**doc, "signal_file": "bad.csv"}))
    with pytest.raises(ConfigError, match=r"bad\.csv:3: gco2e_per_kwh must be a finite"):
        load_scenario(path)
    cli = click.Group()
    sim_command.register(cli)
    result = CliRunner().invoke(
        cli, ["sim", str(path), "--signal", str(tmp_path / "bad.csv"), "--out", str(tmp_path)]
    )
    assert result.exit_code != 0
