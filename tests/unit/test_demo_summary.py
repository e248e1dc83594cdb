"""The demo's compliance summary: the cut's transition is reported, not hidden."""

from __future__ import annotations

from pathlib import Path

from greenllm.config import load_cluster_config
from scheduler.runtime.demo import DemoResult, Sample, summarise

REPO = Path(__file__).resolve().parents[2]


def sample(t: float, budget_w: float, power_w: float, limits_w: float) -> Sample:
    return Sample(t, budget_w, budget_w - 100, power_w, limits_w, {}, {})


def test_limits_and_power_settling_after_a_cut() -> None:
    result = DemoResult(cut_at_s=10.0)
    for t in range(20):
        if t < 10:
            result.samples.append(sample(t, 2800, 1500, 2100))
        else:  # limits answer the old budget until t = 12, power falls at t = 11
            result.samples.append(
                sample(t, 1600, 1700 if t == 10 else 900, 2100 if t < 12 else 1400)
            )
    summary = summarise(load_cluster_config(REPO / "cluster.yaml"), result)
    assert summary["limits_under_new_budget_after_s"] == 2.0
    assert summary["power_under_new_budget_after_s"] == 1.0
    assert summary["steady_samples"] == 18
    assert summary["limits_within_budget_samples"] == 18
    assert summary["power_over_budget_samples"] == 0
    assert summary["max_power_w"] == 1700
