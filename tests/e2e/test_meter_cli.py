"""``greenllm meter`` as a user runs it: exit status, clean JSON on stdout, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)


def greenllm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GREENLLM_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "greenllm.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=cwd,
        env=env,
    )


def test_json_report_keeps_stdout_clean_and_exits_with_the_command_status(
    tmp_path: Path,
) -> None:
    child = "import sys; print('child-out'); print('child-err', file=sys.stderr); sys.exit(3)"
    result = greenllm(
        "meter", "--json", "--backend", "simulated", "--", sys.executable, "-c", child,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    doc = json.loads(result.stdout)  # exactly one JSON document
    assert "child-out" in result.stderr and "child-err" in result.stderr
    assert doc["command"] == [sys.executable, "-c", child]
    assert doc["exit_status"] == 3 and doc["signal"] is None
    assert doc["gpu_backend"] == "simulated"
    assert "simulated" in doc["gpu_note"]
    assert doc["duration_s"] > 0
    # The embedded default's first node has four H100s: listed (their model's idle draw)
    # but left out of the total and CO2e.
    assert len(doc["gpu_energy_j"]) == 4
    gpu_rows = [row for row in doc["devices"] if row["kind"] == "gpu"]
    assert all(row["source"] == "simulated" and not row["in_total"] for row in gpu_rows)
    assert doc["simulated"] == [f"gpu{i} H100-SXM" for i in range(4)]
    assert doc["simulated_in_total"] is False and "left out of the total" in doc["gpu_note"]
    assert doc["gpus_excluded"] == list(doc["gpu_energy_j"])
    assert doc["in_total"] == [row["device"] for row in doc["devices"] if row["in_total"]]
    assert not set(doc["in_total"]) & set(doc["simulated"])
    if doc["cpu_energy_j"] is None:  # no RAPL here: nothing metered, no zero pretended
        assert doc["cpu_unavailable_reason"]
        assert doc["total_energy_j"] is None and doc["avg_power_w"] is None
        assert doc["carbon_g"] is None and doc["metered"] == []
    else:
        assert doc["total_energy_j"] == pytest.approx(
            sum(r["energy_j"] for r in doc["devices"] if r["in_total"])
        )
    assert doc["carbon"]["intensity"] == "world" and doc["carbon"]["pue"] == 1.2


def test_include_simulated_counts_the_simulated_gpus(tmp_path: Path) -> None:
    result = greenllm(
        "meter", "--json", "--include-simulated", "--backend", "simulated",
        "--", sys.executable, "-c", "pass", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["simulated_in_total"] is True and doc["gpus_excluded"] == []
    assert set(doc["simulated"]) <= set(doc["in_total"])
    assert "counted in the total" in doc["gpu_note"]
    assert doc["total_energy_j"] == pytest.approx(
        sum(r["energy_j"] for r in doc["devices"] if r["in_total"])
    )
    assert doc["total_energy_j"] >= sum(doc["gpu_energy_j"].values())
    assert doc["avg_power_w"] == pytest.approx(doc["total_energy_j"] / doc["duration_s"])
    carbon = doc["carbon"]
    assert doc["carbon_g"] == pytest.approx(
        doc["total_energy_j"] / 3.6e6 * carbon["intensity_g_per_kwh"] * 1.2
    )


def test_cpu_estimate_region_and_pue_options(tmp_path: Path) -> None:
    child = "sum(range(3_000_000))"
    result = greenllm(
        "meter", "--json", "--cpu-estimate", "--region", "fr", "--pue", "1.1",
        "--", sys.executable, "-c", child, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    estimate = doc["cpu_estimate"]
    assert estimate["source"] == "estimate" and estimate["cpu_time_s"] > 0
    assert doc["cpu_estimate_j"] == pytest.approx(
        estimate["cpu_time_s"] * estimate["watts_per_core"]
    )
    if doc["cpu_energy_j"] is None:
        assert doc["total_includes"] == ["estimate"]  # simulated GPUs are not counted
        assert doc["in_total"] == ["cpu estimate"] and "cpu estimate" in doc["metered"]
        assert doc["total_energy_j"] == pytest.approx(doc["cpu_estimate_j"])
    assert [r["source"] for r in doc["devices"] if r["kind"] == "cpu"] == ["estimate"]
    assert doc["carbon"]["intensity"] == "fr" and doc["carbon"]["pue"] == 1.1


def test_command_killed_by_a_signal_exits_128_plus_n(tmp_path: Path) -> None:
    child = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    result = greenllm("meter", "--json", "--", sys.executable, "-c", child, cwd=tmp_path)
    assert result.returncode == 128 + 15
    doc = json.loads(result.stdout)
    assert doc["signal"] == "SIGTERM" and doc["exit_status"] == 143


def test_human_report_goes_to_stderr(tmp_path: Path) -> None:
    result = greenllm("meter", "--", sys.executable, "-c", "print('only this')", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == "only this\n"
    assert "simulated" in result.stderr and "left out of the total" in result.stderr
    assert "gCO2e" in result.stderr or "nothing metered" in result.stderr


def test_missing_command_is_a_one_line_usage_error(tmp_path: Path) -> None:
    result = greenllm("meter", "--json", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "missing command" in result.stderr


def test_unknown_command_exits_127_with_one_line(tmp_path: Path) -> None:
    result = greenllm("meter", "--json", "--", "greenllm-no-such-command", cwd=tmp_path)
    assert result.returncode == 127
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "greenllm: error: meter: command not found: greenllm-no-such-command"
    ]


def test_unknown_region_fails_before_running_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    child = f"open({str(marker)!r}, 'w').close()"
    result = greenllm(
        "meter", "--region", "atlantis", "--", sys.executable, "-c", child, cwd=tmp_path
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "unknown grid region 'atlantis'" in result.stderr and "world" in result.stderr
    assert not marker.exists()


def test_intensity_time_series_file(tmp_path: Path) -> None:
    series = tmp_path / "ci.csv"
    series.write_text("timestamp,g_co2e_per_kwh\n2020-01-01T00:00:00Z,123\n")
    result = greenllm(
        "meter", "--json", "--intensity-file", str(series), "--", sys.executable, "-c", "pass",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    carbon = json.loads(result.stdout)["carbon"]
    assert carbon["intensity_g_per_kwh"] == 123.0
    assert carbon["intensity"] == str(series)


def test_bad_region_in_the_config_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "nodes:\n  - name: n\n    gpus:\n      - {type: L4, count: 1}\n"
        "budget:\n  budget_w: 100\n  reserve_w: 0\ncarbon:\n  region: mars\n"
    )
    result = greenllm(
        "meter", "--config", str(config), "--", sys.executable, "-c", "pass", cwd=tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"greenllm: error: {config}: carbon: unknown grid region 'mars'; known regions: "
        "at, au, be, br, ca, cn, cz, de, dk, eu, fi, fr, gr, ie, in, no, pl, se, us, world"
    ]
