"""``greenllm demo``: the main job, end to end on the embedded cluster."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from greenllm.cli.output import emit_json, print_table, progress_console
from greenllm.config import default_config_path
from greenllm.errors import GreenllmError
from scheduler.runtime import demo as live

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "jobs"


@click.command("demo")
@click.option(
    "--duration-s",
    type=click.FloatRange(min=10),
    default=90.0,
    show_default=True,
    help="How long the jobs run, seconds; the budget is cut half-way.",
)
@click.option(
    "--cut-to",
    "cut_budget_w",
    type=click.FloatRange(min=0, min_open=True),
    default=1600.0,
    show_default=True,
    help="Budget after the cut half-way, watts.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("demo-out"),
    show_default=True,
    help="Folder for power.png (power against budget per node) and summary.json.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON document.")
def demo(duration_s: float, cut_budget_w: float, out: Path, as_json: bool) -> None:
    """Bring the embedded cluster up on Ray, submit a training and an inference job, cut
    the budget half-way while showing live progress, then print per-job throughput, J per
    unit, CO2e and budget compliance, write a plot of power against budget, and tear
    everything down."""
    jobs = [EXAMPLES / "train-tiny.yaml", EXAMPLES / "infer-tiny.yaml"]
    missing = [str(j) for j in jobs if not j.exists()]
    if missing:
        raise GreenllmError(f"demo job specs missing: {', '.join(missing)}")
    console = progress_console()
    with tempfile.TemporaryDirectory(prefix="greenllm-demo-") as tmp:
        config_path = live.demo_config(default_config_path(), Path(tmp))
        config, result = live.run_demo(config_path, jobs, duration_s, cut_budget_w, console.print)
    summary = live.summarise(config, result)
    live.write_outputs(out, summary, result)
    if as_json:
        emit_json(summary)
        return
    rows = [
        [j["id"], j["state"], f"{j['throughput']:.1f} {j['unit']}/s", j["work_units"],
         j["energy_j"], j["joules_per_unit"], j["co2e_g"]]
        for j in summary["jobs"]
    ]  # fmt: skip
    print_table("jobs", ["job", "state", "throughput", "work", "energy J", "J/unit", "gCO2e"], rows)
    click.echo(
        f"outside the cut's transition, limits were within budget - reserve in "
        f"{summary['limits_within_budget_samples']}/{summary['steady_samples']} samples and "
        f"power above the budget in {summary['power_over_budget_samples']}; "
        f"peak {summary['max_power_w']:.0f} W"
    )
    for what, key in (
        ("limits were", "limits_under_new_budget_after_s"),
        ("power was", "power_under_new_budget_after_s"),
    ):
        settled = summary[key]
        when = f"within {settled:.1f} s" if settled is not None else "not during the demo"
        click.echo(f"after the cut, {what} under the new budget {when}")
    click.echo(f"plot: {out / 'power.png'}; figures: {out / 'summary.json'}")


def register(cli: click.Group) -> None:
    """Add ``demo`` to the CLI."""
    cli.add_command(demo)
