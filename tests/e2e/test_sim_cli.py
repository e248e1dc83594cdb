"""``greenllm sim`` as a user runs it: the output contract, --compare, --json, errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)

TRACE_HEADER = "t,node,gpu,gpu_type,job,power_limit_w,sm_clock_mhz,power_w,work"
SUMMARY_KEYS = {
    "policy",
    "duration_s",
    "energy_j",
    "work",
    "joules_per_unit",
    "budget_violation_s",
    "max_overshoot_w",
    "slo_met",
    "throughput_vs_unbounded",
}

SCENARIO = """\
name: tiny
duration_s: 6
seed: 2
nodes:
  - name: n1
    gpus: [{type: H100-SXM, count: 2}]
  - name: n2
    gpus: [{type: L4, count: 2}]
budget:
  frac_of_tdp: 0.6
  reserve_w: 20
  schedule:
    - {t_s: 3, frac_of_tdp: 0.45}
jobs:
  - id: tr
    kind: train
    shards: 2
    allowed_gpu_types: [H100-SXM]
  - id: inf
    kind: infer
    shards: 2
    model_params: 1.0e9
    batch: 16
    arrivals: {process: poisson, rate_rps: 4, prompt_tokens: 128, output_tokens: 64}
"""


def greenllm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenllm.cli.main", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
    )


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(SCENARIO)
    return path


def test_sim_writes_the_contract_files(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = greenllm("sim", str(scenario), "--out", str(out), "--policy", "uniform", "--json")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    summary = json.loads((out / "summary.json").read_text())
    assert printed == summary
    assert set(summary) >= SUMMARY_KEYS
    assert summary["policy"] == "uniform"
    assert summary["duration_s"] == 6
    assert set(summary["work"]) == {"tr", "inf"} == set(summary["slo_met"])
    assert summary["work"]["tr"] > 0 and summary["work"]["inf"] > 0
    assert 0 < summary["throughput_vs_unbounded"]["tr"] <= 1.0 + 1e-9
    assert summary["budget_violation_s"] <= 1.0  # only while the cut is carried out
    lines = (out / "trace.csv").read_text().splitlines()
    assert lines[0] == TRACE_HEADER
    rows = list(csv.DictReader(lines))
    assert len(rows) == 4 * 60  # 4 GPUs x 60 steps of 0.1 s
    assert {r["job"] for r in rows} <= {"", "tr", "inf"}
    trace_energy = sum(float(r["power_w"]) * 0.1 for r in rows)
    assert trace_energy == pytest.approx(summary["energy_j"], rel=1e-3)
    trace_work = sum(float(r["work"]) for r in rows if r["job"] == "tr")
    assert trace_work == pytest.approx(summary["work"]["tr"], rel=1e-3)
    budget = (out / "budget.csv").read_text().splitlines()
    assert budget[0] == "t,budget_w"
    assert len(budget) == 3
    assert float(budget[2].split(",")[1]) < float(budget[1].split(",")[1])


def test_trace_every_thins_the_trace(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "thin"
    proc = greenllm("sim", str(scenario), "--out", str(out), "--trace-every", "10")
    assert proc.returncode == 0, proc.stderr
    assert "tr" in proc.stdout
    rows = (out / "trace.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 * 6


def test_compare_prints_table_and_writes_plot(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    proc = greenllm("sim", str(scenario), "--out", str(out), "--compare", "uniform,max-throughput")
    assert proc.returncode == 0, proc.stderr
    assert "uniform" in proc.stdout and "max-throughput" in proc.stdout
    assert "SLOs met" in proc.stdout
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("uniform", "max-throughput"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["policy"] == name
        assert (out / name / "trace.csv").read_text().startswith(TRACE_HEADER + "\n")


def test_bad_scenario_is_one_line_naming_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        SCENARIO.replace("shards: 2\n    allowed", "shards: 2\n    colour: red\n    allowed")
    )
    proc = greenllm("sim", str(path), "--out", str(tmp_path / "o"))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and "jobs.0.colour" in lines[0] and "unknown key" in lines[0]


def test_unknown_policy_is_a_usage_error(scenario: Path, tmp_path: Path) -> None:
    proc = greenllm("sim", str(scenario), "--out", str(tmp_path / "o"), "--policy", "nope")
    assert proc.returncode != 0
    assert "unknown policy 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr
