"""The demo's summary from its readings: the budget binding, the cut's compliance (the
transition reported, not hidden), the inference SLO per phase, what consolidation saved."""

from __future__ import annotations

from pathlib import Path

import pytest

from greenllm.config import load_cluster_config
from scheduler.runtime.demo import DemoResult, JobSample, Phases, Sample
from scheduler.runtime.demo_report import plot, summarise

REPO = Path(__file__).resolve().parents[2]
DT = 0.5
SLO = {"min_throughput": 0.0, "deadline_s": 0.0, "p99_latency_s": 0.0, "p99_ttft_s": 1.0,
       "p99_tpot_s": 0.25}  # fmt: skip


def run(cut_power_w: float = 1200.0, full_limits_w: float = 2690.0) -> DemoResult:
    """A minute: full budget to 20 s, cut to 1600 W to 40 s, raised again to 60 s. Limits
    answer the cut after 0.5 s, power after 1 s (``cut_power_w`` after that)."""
    r = DemoResult("min-energy", 2800.0, 100.0, Phases(20, 20, 20), cut_at_s=20.0,
                   raised_at_s=40.0, end_s=60.0, cut_w=1600.0,
                   draw_before_cut_w=2100.0)  # fmt: skip
    r.jobs = {
        "t-1": {"name": "t", "kind": "train", "shards": 5, "min_shards": None, "unit": "samples",
                "gpu_types": [], "slo": SLO},
        "c-2": {"name": "c", "kind": "infer", "shards": 3, "min_shards": 1, "unit": "tokens",
                "gpu_types": [], "slo": SLO},
    }  # fmt: skip
    work = energy = tokens = joules = 0.0
    for i in range(int(60 / DT)):
        t = i * DT
        phase = "full" if t < 20 else "cut" if t < 40 else "raised"
        budget = 1600.0 if phase == "cut" else 2800.0
        if phase != "cut":
            limits, power = full_limits_w, 2100.0
        else:
            limits = full_limits_w if t < 20.5 else 1490.0
            power = 2100.0 if t < 21 else cut_power_w
        rate, watts = (5.0, 700.0) if phase == "cut" and t >= 21 else (20.0, 1800.0)
        serving = 1 if t < 10 else 3
        work, energy = work + rate * DT, energy + watts * DT
        tokens, joules = tokens + 20 * DT, joules + (66.0 * serving + 50.0 * (3 - serving)) * DT
        r.samples.append(
            Sample(t, phase, budget, budget - 100, power, limits, {
                "t-1": JobSample("running", rate, work, energy),
                "c-2": JobSample("running", 20.0, tokens, joules, serving, 3, 66.0 * serving,
                                 50.0 * (3 - serving)),
            })
        )  # fmt: skip
    for k in range(60):
        r.requests.append({"sent_s": k + 0.5, "status": "ok", "ttft_s": 0.2 + 0.01 * (k % 5),
                           "tpot_s": 0.1, "tokens": 50})  # fmt: skip
    r.requests[-1].update(status="unfinished", tpot_s=None)
    return r


def test_the_budget_binds_and_the_cut_is_obeyed_within_a_second() -> None:
    summary = summarise(load_cluster_config(REPO / "cluster.yaml"), run())
    assert summary["binding"]["binds"] is True
    assert summary["cut"]["below_draw"] is True
    assert summary["cut"]["limits_under_after_s"] == pytest.approx(0.5)
    assert summary["cut"]["power_under_after_s"] == pytest.approx(1.0)
    assert summary["cut"]["obeyed_after_s"] == pytest.approx(1.0)
    comp = summary["compliance"]
    assert comp["seconds_over_budget"] == pytest.approx(1.0)  # the transition, reported
    assert comp["seconds_over_budget_after_transition"] == 0.0
    assert comp["seconds_limits_over_usable_after_transition"] == 0.0
    assert comp["max_overshoot_w"] == pytest.approx(500.0)
    train = summary["training"]
    assert train["slowed_by_cut"] is True
    assert train["throughput"]["cut"] == pytest.approx(5.0, rel=0.05)
    assert train["returned_share"] == pytest.approx(1.0, rel=0.05)
    lat = summary["inference"]["latency"]
    assert [lat[p]["slo_met"] for p in ("full", "cut", "raised")] == [True, True, True]
    assert lat["raised"]["unfinished"] == 1 and lat["raised"]["failed"] == 0
    assert summary["inference"]["slo"] == {"p99_ttft_s": 1.0, "p99_tpot_s": 0.25}
    c = summary["inference"]["consolidation"]
    assert c["parked_replica_s"] == pytest.approx(20.0)  # two replicas parked for 10 s
    # had they served, each would have drawn a serving replica's 66 W instead of 50 W
    assert c["estimated_saved_j"] == pytest.approx(20.0 * 16.0)
    assert c["estimated_joules_per_token_all_serving"] > c["joules_per_token"]


def test_the_slo_per_phase_is_missed_judged_or_not_judged() -> None:
    config = load_cluster_config(REPO / "cluster.yaml")
    result = run()
    for q in result.requests:
        if q["sent_s"] >= 40:  # none answered after the raise: TPOT cannot be judged
            q.update(status="unfinished", tpot_s=None)
        elif 20 <= q["sent_s"] < 21:  # one slow first token under the cut
            q["ttft_s"] = 3.0
    result.requests[0]["status"] = "500"  # and a failure before it
    lat = summarise(config, result)["inference"]["latency"]
    assert [lat[p]["slo_met"] for p in ("full", "cut", "raised")] == [False, False, None]
    assert lat["full"]["failed"] == 1 and lat["cut"]["p99_ttft_s"] > 1.0


def test_a_budget_that_does_not_bind_and_power_left_over_it_are_reported() -> None:
    summary = summarise(load_cluster_config(REPO / "cluster.yaml"), run(1700.0, 2000.0))
    assert summary["binding"]["binds"] is False
    assert summary["cut"]["power_under_after_s"] is None
    assert summary["cut"]["obeyed_after_s"] is None
    assert summary["compliance"]["seconds_over_budget_after_transition"] > 18


def test_the_plot_is_written(tmp_path: Path) -> None:
    result = run()
    summary = summarise(load_cluster_config(REPO / "cluster.yaml"), result)
    plot(result, summary, tmp_path / "demo.png")
    assert (tmp_path / "demo.png").stat().st_size > 10_000
