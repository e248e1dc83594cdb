"""``greenllm compress`` as a user runs it: a model directory in, artifacts, report.json,
pareto.png and one JSON document out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from greenllm.workloads import pretrained_builtin
from greenllm.workloads.registry import builtin_cache_dir

pytestmark = pytest.mark.tiny_model
TEST_STEPS = 300
RATIO_KEYS = {
    "method",
    "bytes_ratio",
    "perplexity_ratio",
    "tokens_per_s_ratio",
    "joules_per_token_ratio",
}


@pytest.fixture(scope="module")
def model_dir(model_cache: Path) -> Path:
    """A trained ``tiny`` in a save_pretrained directory (the run's model cache)."""
    pretrained_builtin("tiny", train_steps=TEST_STEPS)
    return builtin_cache_dir("tiny", TEST_STEPS)


def greenllm(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GREENLLM_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "greenllm.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )


@pytest.mark.slow  # 20-30 s on 2 busy cores
@pytest.mark.timeout(900)  # a cap for hangs: compressing three ways takes minutes on a loaded box
def test_compress_json_report(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = greenllm(
        "compress",
        "--model",
        str(model_dir),
        "--method",
        "int8,prune-2:4,lowrank+int4",
        "--out",
        str(out),
        "--json",
        "--eval-tokens",
        "1024",
        "--gen-tokens",
        "8",
        "--repeats",
        "2",
        "--run-s",
        "0.05",
        "--max-run-s",
        "0.05",
        "--rank",
        "16",
        cache=tmp_path / "cache",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [r["method"] for r in report["results"]] == ["int8", "prune-2:4", "lowrank+int4"]
    for row in report["results"]:
        assert set(row) >= RATIO_KEYS
        assert row["energy_source"] == report["baseline"]["energy_source"]
        assert Path(row["artifact"], "greenllm_compression.json").is_file()
    int8, pruned, chained = report["results"]
    assert int8["bytes_ratio"] < 0.6 and pruned["bytes_ratio"] == pytest.approx(1.0, abs=0.01)
    assert pruned["details"]["sparsity"] == pytest.approx(0.5, abs=1e-6)
    assert chained["parameters_ratio"] < 1.0 and chained["bytes_ratio"] < int8["bytes_ratio"]
    assert (out / "pareto.png").is_file() and (out / "report.json").is_file()
    assert "scoring int8" in proc.stderr  # progress goes to stderr
    base = report["baseline"]
    for row in report["results"]:  # one baseline: every ratio is figure / baseline figure
        for key in ("tokens_per_s", "joules_per_token", "perplexity", "bytes"):
            assert row[f"{key}_ratio"] == pytest.approx(row[key] / base[key])
        for key in ("tokens_per_s", "joules_per_token"):
            assert row[f"{key}_min"] <= row[key] <= row[f"{key}_max"]
            assert row[f"{key}_spread"] == pytest.approx(
                (row[f"{key}_max"] - row[f"{key}_min"]) / row[key]
            )
        assert row["repeats"] == 2 and row["run_s"] >= 0.05


@pytest.mark.slow  # 20-30 s on 2 busy cores
@pytest.mark.timeout(900)  # a cap for hangs: compressing three ways takes minutes on a loaded box
def test_an_artifact_can_be_compressed_again(model_dir: Path, tmp_path: Path) -> None:
    quick = ["--eval-tokens", "512", "--gen-tokens", "4", "--repeats", "1", "--run-s", "0.02"]
    first = tmp_path / "first"
    proc = greenllm(
        "compress", "--model", str(model_dir), "--method", "prune", "--out", str(first),
        *quick, cache=tmp_path / "cache",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "prune" in proc.stdout and "ESTIMATE" in proc.stdout  # the table, for people
    ratio_table = proc.stdout[proc.stdout.index("ratio to the baseline above") :]
    assert "baseline" in ratio_table and "(noisy)" in ratio_table  # one run: spread unknown
    assert "1 run (noisy)" in proc.stdout and "median of 1 run of" in proc.stdout
    first_report = json.loads((first / "report.json").read_text())
    proc = greenllm(
        "compress", "--model", str(first / "prune"), "--method", "int8",
        "--out", str(tmp_path / "second"), "--json", *quick, cache=tmp_path / "cache",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    second = json.loads(proc.stdout)
    pruned_ppl = first_report["results"][0]["perplexity"]
    assert second["baseline"]["perplexity"] == pytest.approx(pruned_ppl, rel=1e-6)
    assert second["results"][0]["bytes_ratio"] < 0.6


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope", "--method", "int8"], "unknown model 'nope'"),
        (["--model", "tiny", "--method", "int3"], "unknown method 'int3'"),
    ],
)
def test_bad_input_is_one_line_on_stderr(args: list[str], message: str, tmp_path: Path) -> None:
    proc = greenllm("compress", *args, "--out", str(tmp_path / "o"), cache=tmp_path / "cache")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("greenllm: error:")]
    assert len(error) == 1 and message in error[0]
