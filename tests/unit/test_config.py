"""cluster.yaml validation: every error names the file, the field path and what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from greenllm.config import ClusterConfig, load_cluster_config, registered_policies
from greenllm.devices.catalog import get_spec
from greenllm.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def base() -> dict[str, Any]:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def error_for(tmp_path: Path, data: dict[str, Any]) -> str:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_cluster_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    return message


def test_shipped_cluster_yaml_is_valid() -> None:
    cfg = load_cluster_config(REPO / "cluster.yaml")
    assert [n.name for n in cfg.nodes] == ["node-h100", "node-a100", "node-l4"]
    assert len(cfg.gpu_types()) == 12
    assert cfg.budget.budget_w < 0.75 * cfg.sum_tdp_w()
    assert cfg.usable_budget_w() >= cfg.sum_min_power_limit_w()
    assert cfg.state_dir.is_absolute()


def test_policies_are_registered_plugins() -> None:
    assert {"uniform", "tdp-proportional", "max-throughput", "min-energy", "priority"} <= set(
        registered_policies()
    )


def test_unknown_key(tmp_path: Path) -> None:
    data = base()
    data["budget"]["budget_kw"] = 3
    msg = error_for(tmp_path, data)
    assert msg.endswith("budget.budget_kw: unknown key (did you mean 'budget_w'?)")


def test_unknown_key_in_node(tmp_path: Path) -> None:
    data = base()
    data["nodes"][1]["gpu"] = []
    assert "nodes.1.gpu: unknown key" in error_for(tmp_path, data)


def test_wrong_type(tmp_path: Path) -> None:
    data = base()
    data["budget"]["budget_w"] = "lots"
    msg = error_for(tmp_path, data)
    assert "budget.budget_w: " in msg and "'lots'" in msg


def test_budget_below_sum_of_minimum_limits(tmp_path: Path) -> None:
    data = base()
    data["budget"]["budget_w"] = 1000
    msg = error_for(tmp_path, data)
    assert "below the sum of the GPUs' minimum power limits (1360 W)" in msg


def test_reserve_counts_against_the_budget(tmp_path: Path) -> None:
    data = base()
    data["budget"] = {"budget_w": 1400, "reserve_w": 100}
    assert "1300 W is below" in error_for(tmp_path, data)


def test_unknown_gpu_type(tmp_path: Path) -> None:
    data = base()
    data["nodes"][2]["gpus"][0]["type"] = "Z900"
    msg = error_for(tmp_path, data)
    assert "nodes.2.gpus.0.type: unknown GPU type 'Z900'" in msg
    assert "H100-SXM" in msg


def test_gpu_type_is_case_insensitive(tmp_path: Path) -> None:
    data = base()
    data["nodes"][2]["gpus"][0]["type"] = "l4"
    assert load_cluster_config(write(tmp_path, data)).nodes[2].gpus[0].type == "L4"


def test_unknown_policy(tmp_path: Path) -> None:
    data = base()
    data["policy"] = "fastest"
    msg = error_for(tmp_path, data)
    assert "policy: unknown policy 'fastest'" in msg and "max-throughput" in msg


def test_duplicate_node_names(tmp_path: Path) -> None:
    data = base()
    data["nodes"][1]["name"] = "node-h100"
    assert "duplicate node names: node-h100" in error_for(tmp_path, data)


def test_negative_and_missing_fields(tmp_path: Path) -> None:
    data = base()
    data["control_period_s"] = -1
    assert "control_period_s: " in error_for(tmp_path, data)
    data = base()
    del data["budget"]
    assert "budget: Field required" in error_for(tmp_path, data)


def test_bad_controller_address(tmp_path: Path) -> None:
    data = base()
    data["controller"]["address"] = "localhost"
    assert "controller.address: expected host:port" in error_for(tmp_path, data)


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("nodes: [\n  - name: a\n budget: {")
    with pytest.raises(ConfigError, match=r"cluster.yaml:\d+:\d+: invalid YAML"):
        load_cluster_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_cluster_config(tmp_path / "nope.yaml")


def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_cluster_config(path)


@pytest.mark.parametrize("budget_w", [1400, 1460, 1600, 2800, 4000, 9000])
def test_failsafe_limits_never_sum_above_the_usable_budget(budget_w: float) -> None:
    data = base()
    data["budget"] = {"budget_w": budget_w, "reserve_w": 40}
    cfg = ClusterConfig.model_validate(data)
    shares = [cfg.failsafe_limit_w(t) for _, _, t in cfg.gpu_types()]
    assert sum(shares) <= cfg.usable_budget_w() + 1e-6
    for (_, _, gpu_type), share in zip(cfg.gpu_types(), shares, strict=True):
        spec = get_spec(gpu_type)
        assert spec.min_power_limit_w <= share <= spec.max_power_limit_w


def test_failsafe_limit_is_static_share_inside_constraints() -> None:
    cfg = ClusterConfig.model_validate(base())
    shares = [cfg.failsafe_limit_w(t) for _, _, t in cfg.gpu_types()]
    assert sum(shares) <= cfg.usable_budget_w()
    # 2700 W usable: minimums take 1360 W, the 1340 W left go by range (500/300/32 W).
    h100 = cfg.failsafe_limit_w("H100-SXM")
    assert h100 == pytest.approx(200 + 1340 * 500 / 3328, abs=0.01)
    data = base()
    data["failsafe"] = {"timeout_s": 3, "limit_w": 10}
    cfg = ClusterConfig.model_validate(data)
    assert cfg.failsafe_limit_w("L4") == 40  # clamped to the L4's minimum limit
