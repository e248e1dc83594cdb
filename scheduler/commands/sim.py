"""``greenllm sim``: run a scenario in virtual time under one policy, or compare several."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from greenllm.cli.output import emit_json, print_table, progress_console
from greenllm.config import default_config_path, load_cluster_config, registered_policies
from greenllm.errors import GreenllmError
from scheduler.sim.compare import comparison_rows, plot_power, run_policy, run_unbounded
from scheduler.sim.from_cluster import build_scenario, cluster_now, load_job_files, parse_schedule
from scheduler.sim.oracle import ORACLE_NAME
from scheduler.sim.results import NO_SLO, SimResult, finite
from scheduler.sim.scenario import Scenario, load_scenario, with_signal

#: GPU-steps above which progress is reported on stderr.
PROGRESS_MIN_GPU_STEPS = 200_000
#: Jobs listed in the printed tables at most (summary.json has them all).
MAX_TABLE_JOBS = 20


def _known(name: str) -> str:
    known = [*registered_policies(), ORACLE_NAME]
    if name not in known:
        raise click.BadParameter(f"unknown policy {name!r} (known: {', '.join(known)})")
    return name


def _progress(label: str, enabled: bool) -> Callable[[float], None] | None:
    if not enabled:
        return None
    console = progress_console()
    return lambda frac: console.print(f"sim: {label} {100 * frac:.0f}%", highlight=False)


def _single_rows(summary: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for job, units in list(summary["work"].items())[:MAX_TABLE_JOBS]:
        rows.append(
            [
                job,
                units,
                summary["units"][job],
                summary["joules_per_unit"][job],
                summary["throughput_vs_unbounded"][job],
                slo_cell(summary, job),
            ]
        )
    return rows


def slo_cell(summary: dict[str, Any], job: str) -> str:
    """``yes``, ``NO``, or ``n/a`` for a job without an SLO."""
    if summary["slo_detail"].get(job) == NO_SLO:
        return "n/a"
    return "yes" if summary["slo_met"][job] else "NO"


def compliance(summary: dict[str, Any]) -> str:
    """The budget figures in words: the transition after a cut is named as such."""
    window_s = summary["transition_window_s"]
    over_s = summary["budget_violation_s"]
    after_s = summary["budget_violation_after_transition_s"]
    text = f"Power over the budget {over_s:g} s"
    if over_s > 0:
        text += (
            f" (up to {summary['max_overshoot_w']:.4g} W), {over_s - after_s:g} s of it within "
            f"the {window_s:.2g} s transition after a cut"
        )
    limits_s = summary["limits_over_budget_s"]
    text += f"; limits over budget - reserve outside transitions: {limits_s:g} s"
    return text


def _more(jobs: int) -> None:
    if jobs > MAX_TABLE_JOBS:
        click.echo(f"... and {jobs - MAX_TABLE_JOBS} more jobs (see summary.json)")


def register(cli: click.Group) -> None:
    """Add ``sim`` to the CLI."""

    @cli.command("sim")
    @click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path), required=False)
    @click.option(
        "--from-cluster",
        is_flag=True,
        help="Build the scenario from cluster.yaml (--config) and job specs (--jobs) instead "
        "of SCENARIO; with its controller up, its budget, policy and active jobs now. "
        "Inference requests fit the served model's context, as the cluster sends them.",
    )
    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="cluster.yaml for --from-cluster (default: $GREENLLM_CONFIG, ./cluster.yaml, or "
        "the embedded default).",
    )
    @click.option(
        "--jobs",
        "job_files",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="A job spec (JOB.yaml, as greenllm submit takes) to run, with --from-cluster; "
        "give it again for more jobs.",
    )
    @click.option(
        "--budget-schedule",
        default="",
        help="With --from-cluster: budget changes to try, T_S:BUDGET_W[,T_S:BUDGET_W...].",
    )
    @click.option(
        "--duration-s",
        type=click.FloatRange(min=1.0, max=1e6),
        default=300.0,
        show_default=True,
        help="With --from-cluster: seconds of virtual time to simulate.",
    )
    @click.option(
        "--out",
        "out_dir",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder for trace.csv, budget.csv, summary.json.",
    )
    @click.option(
        "--policy",
        default=None,
        help="Policy (default: the scenario's); 'greenllm policy list' names them.",
    )
    @click.option(
        "--compare",
        default=None,
        help="Comma-separated policies to run side by side, and 'oracle' (the best split "
        "found with hindsight); 'greenllm policy list' names the policies.",
    )
    @click.option(
        "--trace-every",
        default=1,
        type=click.IntRange(min=1),
        show_default=True,
        help="Record every N-th step in trace.csv.",
    )
    @click.option(
        "--controller-tree",
        is_flag=True,
        help="Run a controller tree: a child controller per child domain of the scenario's "
        "top power domain and a parent splitting its watts between them "
        "(docs/power-domains.md). Writes DIR/tree.json.",
    )
    @click.option(
        "--signal",
        "signal_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Grid signal (CSV t,gco2e_per_kwh[,price_per_kwh] or an Electricity Maps "
        "history JSON), replayed from the start: each job's gCO2e and cost are booked "
        "against it and budget.follow follows it (replaces the scenario's signal_file).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
    @click.option(
        "--verbose", is_flag=True, help="Show the simulated controller's and agents' log."
    )
    def sim(
        scenario: Path | None,
        from_cluster: bool,
        config_path: Path | None,
        job_files: tuple[Path, ...],
        budget_schedule: str,
        duration_s: float,
        out_dir: Path,
        policy: str | None,
        compare: str | None,
        trace_every: int,
        controller_tree: bool,
        signal_file: Path | None,
        as_json: bool,
        verbose: bool,
    ) -> None:
        """Simulate SCENARIO.yaml in virtual time with the controller's decide().

        Writes DIR/trace.csv, DIR/budget.csv and DIR/summary.json; with --compare, one
        such folder per policy, DIR/compare.png (cluster power against budget) and
        DIR/compare.json.
        """
        if policy is not None and compare is not None:
            raise click.UsageError("give --policy or --compare, not both")
        if not verbose:  # the controller's own warnings would drown the results
            for name in ("scheduler", "workers"):
                logging.getLogger(name).setLevel(logging.ERROR)
        if from_cluster == (scenario is not None):
            raise click.UsageError("give SCENARIO or --from-cluster (not both)")
        if scenario is None:
            sc, base_dir = _from_cluster(
                config_path, job_files, budget_schedule, duration_s, policy
            )
        else:
            notes: list[str] = []
            sc, base_dir = load_scenario(scenario, notes)
            for note in notes:
                click.echo(f"greenllm: {note}", err=True)
        if signal_file is not None:
            sc = with_signal(sc, signal_file, Path.cwd(), "--signal")
        names = [_known(p.strip()) for p in compare.split(",")] if compare else []
        if compare is not None and not names:
            raise click.BadParameter("no policies given", param_hint="--compare")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GreenllmError(f"{out_dir}: cannot create: {exc.strerror}") from None
        if controller_tree:
            if compare is not None:
                raise click.UsageError("give --controller-tree or --compare, not both")
            _run_tree(sc, base_dir, out_dir, policy, as_json)
            return
        gpu_count = sum(n.count * len(n.gpu_types()) for n in sc.nodes)
        big = gpu_count * sc.duration_s / sc.control.step_s >= PROGRESS_MIN_GPU_STEPS
        try:
            _run(sc, base_dir, out_dir, policy, names, trace_every, as_json, big)
        except OSError as exc:
            raise GreenllmError(f"{out_dir}: cannot write: {exc.strerror or exc}") from None


def _run_tree(
    sc: Scenario, base_dir: Path, out_dir: Path, policy: str | None, as_json: bool
) -> None:
    """``--controller-tree``: the parent's figures and each child's, into DIR/tree.json."""
    from scheduler.tree.sim import TreeSimulation

    try:
        tree = TreeSimulation(sc, base_dir, _known(policy or sc.policy))
    except ValueError as exc:
        raise GreenllmError(f"--controller-tree: {exc}") from None
    for _ in tree.run():
        pass
    doc = tree.summary()
    try:
        (out_dir / "tree.json").write_text(json.dumps(finite(doc), indent=2) + "\n", "utf-8")
    except OSError as exc:
        raise GreenllmError(f"{out_dir}: cannot write: {exc.strerror or exc}") from None
    if as_json:
        emit_json(finite(doc))
        return
    parent = doc["parent"]
    rows = [
        [
            name,
            round(parent["grants_w"][name]),
            round(child["energy_j"] / 1e3, 1),
            child["limits_over_budget_s"],
            child["domain_limits_over_s"],
        ]
        for name, child in doc["children"].items()
    ]
    print_table(
        f"{sc.name} as a controller tree: {len(rows)} children under {parent['usable_w']:g} W; "
        f"over the parent's limit {parent['over_s']:g} s",
        ["child", "grant W (end)", "energy kJ", "over its grant s", "domains over s"],
        rows,
    )
    for cut in parent["cuts"]:
        click.echo(
            f"cut at {cut['t_s']:g} s: the children's limits fit it after "
            f"{_seconds(cut['site_fit_s'])}, each child's its grant after "
            f"{_seconds(cut['children_fit_s'])}"
        )
    click.echo(f"wrote {out_dir}/tree.json")


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def _from_cluster(
    config_path: Path | None,
    job_files: tuple[Path, ...],
    schedule: str,
    duration_s: float,
    policy: str | None,
) -> tuple[Scenario, Path]:
    """The what-if scenario of the cluster (``--from-cluster``)."""
    path = config_path or default_config_path()
    config = load_cluster_config(path)
    now = cluster_now(path)
    if now is not None:
        click.echo(
            f"greenllm: the cluster now: budget {now.budget_w:g} W, policy {now.policy}, "
            f"{len(now.job_specs)} active jobs",
            err=True,
        )
    jobs = load_job_files(job_files)
    sc = build_scenario(config, jobs, duration_s, parse_schedule(schedule), now, policy)
    return sc, Path.cwd()


def _run(
    sc: Scenario,
    base_dir: Path,
    out_dir: Path,
    policy: str | None,
    names: list[str],
    trace_every: int,
    as_json: bool,
    big: bool,
) -> None:
    unbounded: SimResult = run_unbounded(sc, base_dir, _progress("unbounded reference", big))
    if not names:
        name = _known(policy or sc.policy)
        _, summary = run_policy(
            sc, base_dir, name, out_dir, unbounded, trace_every, _progress(name, big)
        )
        if as_json:
            emit_json(finite(summary))
            return
        print_table(
            f"{sc.name} under {name}: {summary['energy_j'] / 1e3:.4g} kJ. {compliance(summary)}",
            ["job", "work", "unit", "J/unit", "vs unbounded", "SLO met"],
            _single_rows(summary),
        )
        _more(len(summary["work"]))
        click.echo(f"wrote {out_dir}/trace.csv, budget.csv, summary.json")
        return
    results: dict[str, SimResult] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for name in names:
        res, summary = run_policy(
            sc, base_dir, name, out_dir / name, unbounded, trace_every, _progress(name, big)
        )
        results[name], summaries[name] = res, summary
    plot_power(results, out_dir / "compare.png")
    doc = {"scenario": sc.name, "policies": summaries}
    (out_dir / "compare.json").write_text(
        json.dumps(finite(doc), indent=2) + "\n", encoding="utf-8"
    )
    if as_json:
        emit_json(finite(doc))
        return
    columns, rows = comparison_rows(summaries, MAX_TABLE_JOBS)
    print_table(f"{sc.name}: policies side by side", columns, rows)
    _more(len(next(iter(summaries.values()))["work"]))
    click.echo(f"wrote {out_dir}/compare.png and one folder per policy")
