"""The foundation commands as a user runs them: exit codes, one-line errors, --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


def greenllm(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenllm.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("greenllm: error: ")
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_commands() -> None:
    proc = greenllm("--help")
    assert proc.returncode == 0
    for name in ("config", "gpus", "profile"):
        assert name in proc.stdout


def test_config_check_valid_json() -> None:
    proc = greenllm("config", "check", "cluster.yaml", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["valid"] is True
    assert doc["gpu_count"] == 12
    assert doc["budget_w"] == 2800


def test_config_check_invalid(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (REPO / "cluster.yaml").read_text().replace("policy: max-throughput", "polcy: x")
    bad.write_text(text)
    proc = greenllm("config", "check", str(bad))
    assert_one_line_error(proc, str(bad), "polcy: unknown key")
    assert proc.stdout == ""


def test_gpus_lists_simulated_gpus_json() -> None:
    proc = greenllm("gpus", "--node", "node-a100", "--backend", "simulated", "--json")
    assert proc.returncode == 0, proc.stderr
    gpus = json.loads(proc.stdout)["gpus"]
    assert [g["type"] for g in gpus] == ["A100-SXM4"] * 4
    assert gpus[0]["max_power_limit_w"] == 400 and gpus[0]["min_power_limit_w"] == 100
    assert gpus[0]["max_sm_clock_mhz"] == 1410


def test_gpus_unknown_node() -> None:
    assert_one_line_error(greenllm("gpus", "--node", "nope"), "no node 'nope'")


def test_profile_power_limits_json() -> None:
    proc = greenllm(
        "profile", "--gpu-type", "V100-SXM2", "--workload", "train",
        "--power-limits", "150:300:30", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["power_limit_w"] for r in rows] == [150, 180, 210, 240, 270, 300]
    keys = {
        "gpu_type", "gpu_index", "simulated", "workload", "batch", "model_params", "unit",
        "requested_power_limit_w", "requested_sm_clock_mhz",
        "power_limit_w", "sm_clock_mhz", "power_w", "throughput",
        "relative_throughput", "joules_per_unit", "relative_energy",
    }  # fmt: skip
    assert all(set(r) == keys for r in rows)
    assert {(r["gpu_type"], r["workload"], r["unit"], r["simulated"]) for r in rows} == {
        ("V100-SXM2", "train", "samples", True)
    }
    assert [r["requested_power_limit_w"] for r in rows] == [r["power_limit_w"] for r in rows]
    assert rows[-1]["relative_throughput"] == pytest.approx(1.0)
    assert 0.89 <= rows[2]["relative_throughput"] <= 0.97  # 210 W = 70% of 300 W


def test_profile_sm_clocks_decode() -> None:
    proc = greenllm(
        "profile", "--gpu-type", "H100-SXM", "--workload", "decode", "--batch", "32",
        "--sm-clocks", "990:1980:495", "--json",
    )  # fmt: skip
    rows = json.loads(proc.stdout)
    assert [r["sm_clock_mhz"] for r in rows] == [990, 1485, 1980]
    assert {(r["batch"], r["unit"]) for r in rows} == {(32, "tokens")}
    assert rows[0]["relative_energy"] < 0.8 and rows[0]["relative_throughput"] > 0.94


def test_profile_says_when_a_clock_is_moved_to_the_grid() -> None:
    args = ["profile", "--gpu-type", "A100-SXM4", "--workload", "train", "--sm-clocks"]
    proc = greenllm(*args, "1000:1010:7", "--json")
    rows = json.loads(proc.stdout)
    assert [(r["requested_sm_clock_mhz"], r["sm_clock_mhz"]) for r in rows] == [
        (1000, 990),
        (1007, 1005),
    ]
    table = greenllm(*args, "1000:1010:7")
    assert table.returncode == 0, table.stderr
    assert "1000 -> 990, 1007 -> 1005 MHz" in table.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ["--gpu-type", "L4", "--workload", "train", "--power-limits", "10:72:10"],
            "10 is outside",
        ),
        (["--gpu-type", "X", "--workload", "train", "--power-limits", "1:2:1"], "unknown GPU"),
        (["--gpu-type", "L4", "--workload", "train"], "exactly one of --power-limits"),
        (["--gpu-type", "L4", "--workload", "fly", "--sm-clocks", "1:2:1"], "--workload"),
        (["--gpu-type", "L4", "--workload", "train", "--power-limits", "a:b"], "START:STOP:STEP"),
    ],
)
def test_profile_bad_input(args: list[str], fragment: str) -> None:
    assert_one_line_error(greenllm("profile", *args), fragment)
