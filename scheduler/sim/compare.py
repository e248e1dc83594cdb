"""Running a scenario under one or several policies, the comparison table and the plot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from scheduler.core.problem import Policy
from scheduler.policies import load_policy
from scheduler.sim.engine import Simulation
from scheduler.sim.oracle import ORACLE_NAME, OraclePolicy
from scheduler.sim.results import NO_SLO, SimResult, TraceWriter, write_outputs
from scheduler.sim.scenario import Scenario

#: Policy the unbounded reference run uses (with no budget every policy runs uncapped).
REFERENCE_POLICY = "uniform"


def make_policy(name: str, scenario: Scenario) -> Policy:
    """A registered policy by name, or the evaluation-only ``oracle``."""
    if name == ORACLE_NAME:
        return OraclePolicy.for_scenario(scenario)
    return load_policy(name)


def run_unbounded(
    scenario: Scenario, base_dir: Path, progress: Callable[[float], None] | None = None
) -> SimResult:
    """The same scenario with no budget (the reference of ``throughput_vs_unbounded``)."""
    policy = load_policy(REFERENCE_POLICY)
    return Simulation(scenario, base_dir, policy, REFERENCE_POLICY, True, None, progress).run()


def run_policy(
    scenario: Scenario,
    base_dir: Path,
    name: str,
    out_dir: Path,
    unbounded: SimResult,
    trace_every: int = 1,
    progress: Callable[[float], None] | None = None,
) -> tuple[SimResult, dict[str, Any]]:
    """Run one policy, writing trace.csv, budget.csv and summary.json into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trace = TraceWriter(out_dir / "trace.csv", trace_every)
    try:
        sim = Simulation(
            scenario, base_dir, make_policy(name, scenario), name, False, trace, progress
        )
        result = sim.run()
    finally:
        trace.close()
    summary = result.summary(unbounded)
    write_outputs(out_dir, result, summary)
    return result, summary


def comparison_rows(
    summaries: dict[str, dict[str, Any]], max_jobs: int
) -> tuple[list[str], list[list[Any]]]:
    """Side-by-side table: rows per job metric (first ``max_jobs`` jobs) and totals, one
    column per policy."""
    names = list(summaries)
    first = summaries[names[0]]
    rows: list[list[Any]] = []
    for job in list(first["work"])[:max_jobs]:
        unit = first["units"][job]
        rows.append(
            [f"{job} {unit}/s", *(s["work"][job] / s["duration_s"] for s in summaries.values())]
        )
        rows.append(
            [f"{job} J/{unit[:-1]}", *(s["joules_per_unit"][job] for s in summaries.values())]
        )
        rows.append(
            [
                f"{job} vs unbounded",
                *(s["throughput_vs_unbounded"][job] for s in summaries.values()),
            ]
        )
        rows.append(
            [
                f"{job} SLO met",
                *(
                    "n/a"
                    if s["slo_detail"][job] == NO_SLO
                    else "yes"
                    if s["slo_met"][job]
                    else "NO"
                    for s in summaries.values()
                ),
            ]
        )
    rows.append(
        [
            "weighted throughput vs unbounded",
            *(s["weighted_throughput_vs_unbounded"] for s in summaries.values()),
        ]
    )
    rows.append(["energy (kJ)", *(s["energy_j"] / 1e3 for s in summaries.values())])
    rows.append(
        [
            "SLOs met",
            *(f"{sum(s['slo_met'].values())}/{len(s['slo_met'])}" for s in summaries.values()),
        ]
    )
    rows.append(["budget violation (s)", *(s["budget_violation_s"] for s in summaries.values())])
    rows.append(["max overshoot (W)", *(s["max_overshoot_w"] for s in summaries.values())])
    return ["metric", *names], rows


def plot_power(results: dict[str, SimResult], path: Path) -> None:
    """PNG of cluster power against the budget over time, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    first = next(iter(results.values()))
    ax.step(first.times_s, first.budget_w, where="post", color="black", lw=2, label="budget")
    for name, res in results.items():
        ax.plot(res.times_s, res.power_w, lw=1, label=name)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("cluster GPU power (W)")
    ax.set_title("Cluster power against budget")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
