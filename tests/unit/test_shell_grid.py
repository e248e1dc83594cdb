"""The grid signal in the controller's shell on the live path: the file's times read against
the wall clock, the budget re-set at each interval through operator.set_budget (an operator's
hand-set budget holds until the next interval), a replayed signal's origin kept across a
restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from greenllm.config import parse_cluster_config
from scheduler.shell import operator
from scheduler.shell.controller import ControllerShell
from scheduler.shell.grid import ORIGIN_SETTING
from scheduler.shell.memstore import MemoryStore
from scheduler.shell.status import cluster_status

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HOUR_S = 3600.0


class Clock:
    def __init__(self, t_s: float) -> None:
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s


def config(signal: Path, replay: bool = False) -> dict[str, Any]:
    return {
        "nodes": [{"name": "a", "gpus": [{"type": "L4", "count": 2}]}],
        "budget": {
            "budget_w": 140,
            "follow": {"floor_w": 100, "ceiling_w": 140, "points": [[100, 140], [500, 100]]},
        },
        "policy": "uniform",
        "carbon": {"signal_file": str(signal), "signal_replay": replay},
    }


def day(tmp_path: Path) -> Path:
    path = tmp_path / "de.csv"
    path.write_text(
        "t,gco2e_per_kwh\n"
        "2026-01-01T00:00:00Z,500\n"
        "2026-01-01T01:00:00Z,300\n"
        "2026-01-01T02:00:00Z,100\n"
    )
    return path


def test_live_budget_follows_the_signal_against_the_wall_clock(tmp_path: Path) -> None:
    store = MemoryStore()
    wall = Clock(T0 + 1.5 * HOUR_S)  # 01:30 UTC: 300 g/kWh
    shell = ControllerShell(
        parse_cluster_config(config(day(tmp_path))), store, clock=Clock(0.0), wall_clock=wall
    )
    shell.step()
    assert shell.budget_w == pytest.approx(120.0)
    assert store.settings["budget_w"] == pytest.approx(120.0)  # on disk, as any budget change
    st = cluster_status(shell)
    assert st.grid_gco2e_per_kwh == 300.0
    assert not st.HasField("grid_price_per_kwh")
    assert "300 gCO2e/kWh" in st.grid_signal
    # An operator's budget holds until the next interval of the signal.
    operator.set_budget(shell, 130.0, None)
    wall.t_s += 600
    shell.step()
    assert shell.budget_w == 130.0
    wall.t_s = T0 + 2 * HOUR_S + 1  # 02:00: 100 g/kWh
    shell.step()
    assert shell.budget_w == pytest.approx(140.0)
    # 03:00: the series (hourly) ran out; the last value holds and it says so once.
    wall.t_s = T0 + 3 * HOUR_S + 5
    shell.step()
    shell.step()
    assert shell.budget_w == pytest.approx(140.0)
    assert "holding its last value" in cluster_status(shell).grid_signal
    kinds = [e.kind for e in store.events(None, 100)]
    assert kinds.count("signal-ran-out") == 1
    assert kinds.count("budget-follow") == 2


def test_a_replayed_signal_keeps_its_origin_across_a_restart(tmp_path: Path) -> None:
    store = MemoryStore()
    cfg = parse_cluster_config(config(day(tmp_path), replay=True))
    first = ControllerShell(cfg, store, clock=Clock(0.0), wall_clock=Clock(1000.0))
    first.step()
    assert store.settings[ORIGIN_SETTING] == 1000.0
    assert first.grid.intensity_now() == 500.0
    again = ControllerShell(cfg, store, clock=Clock(0.0), wall_clock=Clock(1000.0 + HOUR_S))
    assert again.grid.origin_s == 1000.0
    assert again.grid.intensity_now() == 300.0  # an hour into the day, not its start again


def test_an_unknown_region_leaves_out_the_books_not_the_controller() -> None:
    cfg = parse_cluster_config(
        {
            "nodes": [{"name": "a", "gpus": [{"type": "L4", "count": 2}]}],
            "budget": {"budget_w": 140},
            "carbon": {"region": "atlantis"},
        }
    )
    shell = ControllerShell(cfg, MemoryStore(), clock=Clock(0.0), wall_clock=Clock(T0))
    shell.step()
    operator.submit(shell, '{"name": "j", "kind": "train"}')
    shell.step()
    st = cluster_status(shell)
    assert shell.grid.signal is None
    assert [j.HasField("co2e_g") for j in st.jobs] == [False]
    assert st.grid_signal == ""
