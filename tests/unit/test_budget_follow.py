"""budget.follow: the map from a signal value to a budget, and the config that names it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from greenllm.config import BudgetFollow, load_cluster_config
from greenllm.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def follow(**changes: object) -> BudgetFollow:
    doc: dict[str, object] = {
        "floor_w": 1000,
        "ceiling_w": 3000,
        "points": [[100, 3000], [500, 1000]],
        **changes,
    }
    return BudgetFollow.model_validate(doc)


def test_linear_map_interpolates_and_holds_beyond_its_points() -> None:
    f = follow()
    assert f.budget_w(50) == 3000
    assert f.budget_w(100) == 3000
    assert f.budget_w(300) == pytest.approx(2000)
    assert f.budget_w(400) == pytest.approx(1500)
    assert f.budget_w(900) == 1000


def test_table_map_steps_at_each_point() -> None:
    f = follow(map="table", points=[[0, 3000], [200, 2000], [400, 1200]])
    assert f.budget_w(-5) == 3000  # below the first point: the first point's budget
    assert f.budget_w(199.9) == 3000
    assert f.budget_w(200) == 2000
    assert f.budget_w(399) == 2000
    assert f.budget_w(1e6) == 1200


def test_budgets_stay_between_floor_and_ceiling() -> None:
    f = follow(points=[[100, 5000], [500, 200]])
    assert f.budget_w(0) == 3000
    assert f.budget_w(500) == 1000
    assert f.budget_w(300) == pytest.approx(2600)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"points": [[500, 1000], [100, 3000]]}, "must increase strictly"),
        ({"floor_w": 4000}, "ceiling_w 3000 W is below floor_w 4000 W"),
        ({"points": []}, "at least 1 item"),
        ({"signal": "wind"}, "intensity"),
    ],
)
def test_bad_follow_sections_are_refused(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        follow(**changes)


def _cluster(tmp_path: Path, carbon: dict[str, object], budget: dict[str, object]) -> Path:
    doc = yaml.safe_load((REPO / "cluster.yaml").read_text())
    doc["carbon"] = carbon
    doc["budget"] = {**doc["budget"], **budget}
    path = tmp_path / "cfg" / "cluster.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def _floor_w() -> float:
    return load_cluster_config(REPO / "cluster.yaml").sum_min_power_limit_w()


def test_signal_file_is_taken_from_the_config_files_folder(tmp_path: Path) -> None:
    path = _cluster(tmp_path, {"signal_file": "day.csv"}, {})
    (path.parent / "day.csv").write_text("t,gco2e_per_kwh\n0,100\n60,200\n")
    config = load_cluster_config(path)
    assert config.carbon.signal_file == path.parent.resolve() / "day.csv"


def test_a_bad_signal_file_is_one_line_naming_it(tmp_path: Path) -> None:
    path = _cluster(tmp_path, {"signal_file": "day.csv"}, {})
    (path.parent / "day.csv").write_text("t,gco2e_per_kwh\n0,100\n60,-1\n")
    with pytest.raises(ConfigError, match=r"day\.csv:3: gco2e_per_kwh must be a finite") as info:
        load_cluster_config(path)
    assert "\n" not in str(info.value)


def test_follow_needs_a_signal_and_a_price_to_follow_price(tmp_path: Path) -> None:
    floor_w = _floor_w()
    section = {"floor_w": floor_w + 100, "ceiling_w": floor_w + 500, "points": [[0, floor_w]]}
    path = _cluster(tmp_path, {}, {"follow": section})
    with pytest.raises(ConfigError, match=r"budget\.follow needs carbon\.signal_file"):
        load_cluster_config(path)
    path = _cluster(
        tmp_path, {"signal_file": "day.csv"}, {"follow": {**section, "signal": "price"}}
    )
    (path.parent / "day.csv").write_text("t,gco2e_per_kwh\n0,100\n")
    with pytest.raises(ConfigError, match="no price_per_kwh column"):
        load_cluster_config(path)
    low = {**section, "floor_w": floor_w / 2}
    path = _cluster(tmp_path, {"signal_file": "day.csv"}, {"follow": low})
    with pytest.raises(ConfigError, match=r"follow\.floor_w .* below the sum of the GPUs. minimum"):
        load_cluster_config(path)


def test_sim_from_cluster_carries_the_signal_and_the_follow(tmp_path: Path) -> None:
    from scheduler.sim.from_cluster import build_scenario

    floor_w = _floor_w()
    section = {"floor_w": floor_w + 100, "ceiling_w": floor_w + 500, "points": [[0, floor_w]]}
    path = _cluster(tmp_path, {"signal_file": "day.csv"}, {"follow": section})
    (path.parent / "day.csv").write_text("t,gco2e_per_kwh\n0,100\n60,200\n")
    config = load_cluster_config(path)
    sc = build_scenario(config, [], 60.0)
    assert sc.signal_file == path.parent.resolve() / "day.csv"
    assert sc.budget.follow == config.budget.follow
