"""greenllm.job: a no-op outside a job; cumulative progress, batch shares and pacing inside."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from greenllm import job


@pytest.fixture
def in_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(job.PROGRESS_FILE_ENV, str(tmp_path / "progress.json"))
    monkeypatch.setenv(job.SHARE_FILE_ENV, str(tmp_path / "share.json"))
    monkeypatch.setenv(job.CHECKPOINT_DIR_ENV, str(tmp_path / "ck"))
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.delenv(job.PACE_FILE_ENV, raising=False)
    return tmp_path


def test_outside_a_job_nothing_happens(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (job.PROGRESS_FILE_ENV, job.SHARE_FILE_ENV, job.CHECKPOINT_DIR_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert not job.in_job() and job.checkpoint_dir() is None
    job.report(samples=8, tokens=1024, step=3)
    assert job.share() == 1.0
    assert list(tmp_path.iterdir()) == []


def test_report_counts_increments_into_a_cumulative_file(in_job: Path) -> None:
    assert job.in_job() and job.checkpoint_dir() == in_job / "ck"
    job.report(samples=8, tokens=1024)
    job.report(samples=4)
    doc = json.loads((in_job / "progress.json").read_text())
    assert (doc["samples"], doc["tokens"], doc["steps"], doc["reports"]) == (12, 1024, 2, 2)
    job.report(samples=1, step=41)  # the script's own step, e.g. after a resume
    assert json.loads((in_job / "progress.json").read_text())["steps"] == 41
    assert [p.name for p in in_job.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    "kwargs",
    [{"samples": -1}, {"tokens": float("nan")}, {"samples": "8"}, {"samples": True},
     {"step": -2}, {"step": 1.5}],
)  # fmt: skip
def test_bad_reports_are_errors_everywhere(kwargs: dict[str, object]) -> None:
    with pytest.raises((TypeError, ValueError), match=r"greenllm\.job\.report"):
        job.report(**kwargs)  # type: ignore[arg-type]


def test_share_equal_until_the_runner_writes_one(in_job: Path) -> None:
    assert job.share() == 0.25
    job.write_json_atomic(in_job / "share.json", {"share": 0.6})
    assert job.share() == 0.6
    (in_job / "share.json").write_text("{not json")
    assert job.share() == 0.25
    job.write_json_atomic(in_job / "share.json", {"share": 1.5})
    assert job.share() == 0.25


def test_report_waits_for_the_simulated_gpu(in_job: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pace = in_job / "pace.json"
    monkeypatch.setenv(job.PACE_FILE_ENV, str(pace))
    job.write_json_atomic(pace, {"throughput": 20.0})  # the simulated GPU: 20 samples/s
    start = time.monotonic()
    job.report(samples=2)  # the first report: its work untimed, it waits its whole 0.1 s
    assert 0.09 < time.monotonic() - start < 0.2
    time.sleep(0.05)  # the step's real work: a quarter of the GPU's 0.2 s
    start = time.monotonic()
    job.report(samples=4)
    assert 0.12 < time.monotonic() - start < 0.25  # waits the rest: 0.15 s
    doc = json.loads((in_job / "progress.json").read_text())
    assert doc["gpu_wait_fraction"] == pytest.approx(0.0, abs=0.05)
    assert doc["paced_s"] == pytest.approx(0.3, abs=0.05)


def test_a_slow_step_waits_nothing_and_reports_the_gpu_wait(
    in_job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pace = in_job / "pace.json"
    monkeypatch.setenv(job.PACE_FILE_ENV, str(pace))
    job.write_json_atomic(pace, {"throughput": 100.0})
    job.report(samples=1)
    time.sleep(0.4)  # the CPU (or a slower peer at the gradient exchange): 0.4 s for 0.1 s
    start = time.monotonic()
    job.report(samples=10)
    assert time.monotonic() - start < 0.05  # no wait, and no debt carried on
    doc = json.loads((in_job / "progress.json").read_text())
    # 0.01 s + 0.4 s paced, of which the GPU worked 0.01 + 0.1 s.
    assert doc["gpu_wait_fraction"] == pytest.approx(1 - 0.11 / 0.41, abs=0.05)
    assert doc["gpu_busy_s"] == pytest.approx(0.11, abs=0.02)
    start = time.monotonic()
    job.report(samples=10)  # done at once: it waits its whole target again, no cascade
    assert 0.08 < time.monotonic() - start < 0.2


def test_a_limit_change_is_read_while_waiting(
    in_job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pace = in_job / "pace.json"
    monkeypatch.setenv(job.PACE_FILE_ENV, str(pace))
    job.write_json_atomic(pace, {"throughput": 1.0})
    job.report(samples=0)
    timer = threading.Timer(0.2, job.write_json_atomic, (pace, {"throughput": 100.0}))
    timer.start()
    start = time.monotonic()
    job.report(samples=10)  # 10 s at the old rate; the rest at the new one after 0.2 s
    assert time.monotonic() - start < 0.6
    timer.join()


def test_no_pacing_without_a_pace_file(in_job: Path) -> None:
    job.report(samples=1000)
    start = time.monotonic()
    job.report(samples=1000)
    assert time.monotonic() - start < 0.05
    assert "gpu_wait_fraction" not in json.loads((in_job / "progress.json").read_text())
