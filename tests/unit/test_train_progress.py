"""greenllm.job: a no-op outside a job; cumulative progress, batch shares and pacing inside."""

from __future__ import annotations

import json
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
    job.write_json_atomic(pace, {"ratio": 0.5})
    job.report(samples=1)  # starts the clock
    busy_s = spin(0.2)  # the "step": at half speed it takes twice as long
    start = time.monotonic()
    job.report(samples=1)
    waited_s = time.monotonic() - start
    assert busy_s * 0.7 < waited_s < busy_s * 1.6
    time.sleep(0.3)  # blocked, e.g. at the other ranks' gradient exchange: not work
    start = time.monotonic()
    job.report(samples=1)
    assert time.monotonic() - start < 0.05
    job.write_json_atomic(pace, {"ratio": 1.0})
    spin(0.1)
    start = time.monotonic()
    job.report(samples=1)
    assert time.monotonic() - start < 0.05  # full speed: no wait


def spin(cpu_s: float) -> float:
    """Burn ``cpu_s`` of this process's CPU time; returns the CPU seconds used."""
    start = time.process_time()
    while time.process_time() - start < cpu_s:
        sum(i * i for i in range(1000))
    return time.process_time() - start
