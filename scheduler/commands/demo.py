"""``greenllm demo``: the product end to end on the embedded cluster."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import click

from greenllm.cli.output import emit_json, print_table, progress_console
from greenllm.config import default_config_path, load_cluster_config
from greenllm.errors import GreenllmError
from scheduler.runtime import demo as live
from scheduler.runtime import demo_report as report

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "demo"


def _phase(name: str, default: float, what: str) -> Any:
    return click.option(
        f"--{name}-s", f"{name}_s", type=click.FloatRange(min=10), default=default,
        show_default=True, help=f"Seconds {what}.",
    )  # fmt: skip


@click.command("demo")
@_phase("full", 30.0, "under the full budget before the cut")
@_phase("cut", 30.0, "under the cut budget")
@_phase("raised", 20.0, "after the budget is raised again")
@click.option(
    "--cut-to",
    "cut_to_w",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Budget after the cut, watts (default: 80% of what the cluster draws just before).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("demo-out"),
    show_default=True,
    help="Folder for demo.png, summary.json, samples.json and requests.json.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON document.")
def demo(
    full_s: float, cut_s: float, raised_s: float, cut_to_w: float | None, out: Path, as_json: bool
) -> None:
    """Bring the embedded cluster up on Ray under min-energy and fill it: a training job that
    spans H100 and A100 (examples/demo/train-mixed.yaml) and an inference job serving the
    Azure conversation trace on as few of its replicas as the load needs
    (examples/demo/chat.yaml). The budget binds; it is cut below the draw, then raised
    again. Prints live progress, then compliance, the time to obey the cut, each job's
    throughput and J per unit per phase, the inference SLO per phase and what consolidating
    replicas saved; writes a plot, and tears everything down."""
    specs = [EXAMPLES / "train-mixed.yaml", EXAMPLES / "chat.yaml"]
    missing = [str(j) for j in specs if not j.exists()]
    if missing:
        raise GreenllmError(f"demo job specs missing: {', '.join(missing)}")
    console = progress_console()
    started = time.monotonic()
    phases = live.Phases(full_s, cut_s, raised_s, cut_to_w)
    with tempfile.TemporaryDirectory(prefix="greenllm-demo-") as tmp:
        config_path = live.demo_config(default_config_path(), Path(tmp))
        result = live.run_demo(config_path, specs[0], specs[1], phases, console.print)
        config = load_cluster_config(config_path)
    summary = report.summarise(config, result)
    summary["wall_s"] = time.monotonic() - started
    report.write_outputs(out, summary, result)
    if as_json:
        emit_json(summary)
        return
    print_summary(summary, out)


def _f(value: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def print_summary(s: dict[str, Any], out: Path) -> None:
    """The summary for people."""
    b, bind, cut, comp = s["budget"], s["binding"], s["cut"], s["compliance"]
    click.echo(
        f"policy {s['policy']}; budget {b['initial_w']:g} W (reserve {b['reserve_w']:g} W), "
        f"cut to {b['cut_w']:g} W at {b['cut_at_s']:.0f} s, raised to {b['raised_w']:g} W at "
        f"{b['raised_at_s']:.0f} s"
    )
    click.echo(
        f"before the cut the budget {'binds' if bind['binds'] else 'does NOT bind'}: limits "
        f"{_f(bind['mean_limits_w'], '.0f')} of {_f(bind['usable_w'], '.0f')} W usable, "
        f"power {_f(bind['mean_power_w'], '.0f')} W"
    )
    click.echo(
        f"the cut to {cut['budget_w']:g} W came at a draw of {cut['draw_before_w']:.0f} W; "
        f"limits under it after {_f(cut['limits_under_after_s'], '.2f', ' s')}, power after "
        f"{_f(cut['power_under_after_s'], '.2f', ' s')}"
    )
    click.echo(
        f"compliance: power above the budget {comp['seconds_over_budget']:.1f} s "
        f"({comp['seconds_over_budget_after_transition']:.1f} s after the cut's transition), "
        f"max overshoot {comp['max_overshoot_w']:.0f} W; limits above budget - reserve after "
        f"the transition {comp['seconds_limits_over_usable_after_transition']:.1f} s"
    )
    rows = []
    for j in s["jobs"]:
        for name, ph in s["phases"].items():
            f = ph["jobs"].get(j["id"], {})
            serving = f.get("replicas_serving")
            rows.append([
                j["name"], name, f"{ph['budget_w']:g} W" if ph["budget_w"] else "-",
                f"{_f(f.get('throughput'))} {j['unit']}/s", _f(f.get("mean_power_w"), ".0f", " W"),
                _f(f.get("joules_per_unit"), ".2f"),
                f"{serving['min']}-{serving['max']}" if serving else "",
            ])  # fmt: skip
    cols = ["job", "phase", "budget", "throughput", "power", "J/unit", "replicas"]
    print_table("per phase", cols, rows)
    lat, slo = s["inference"]["latency"], s["inference"]["slo"]
    for name, x in lat.items():
        met = {True: "met", False: "MISSED", None: "n/a"}[x["slo_met"]]
        click.echo(
            f"inference {name}: {x['requests']} requests, {x['ok']} answered, {x['failed']} "
            f"failed, {x['unfinished']} still streaming at the end; p99 TTFT "
            f"{_f(x['p99_ttft_s'], '.2f', ' s')} (SLO {slo['p99_ttft_s']:g} s), p99 TPOT "
            f"{_f(x['p99_tpot_s'], '.3f', ' s')} (SLO {slo['p99_tpot_s']:g} s): {met}"
        )
    c = s["inference"]["consolidation"]
    click.echo(
        f"consolidation: {c['parked_replica_s']:.0f} of "
        f"{c['parked_replica_s'] + c['serving_replica_s']:.0f} replica-seconds parked; "
        f"{_f(c['joules_per_token'], '.2f')} J/token, against an estimated "
        f"{_f(c['estimated_joules_per_token_all_serving'], '.2f')} J/token had every replica "
        f"served ({c['estimated_saved_j']:.0f} J saved, {c['note'].split(':')[0]})"
    )
    tr = s["training"]
    click.echo(
        f"training: {_f(tr['throughput']['full'])} samples/s, {_f(tr['throughput']['cut'])} "
        f"under the cut, {_f(tr['throughput']['raised'])} after the raise "
        f"({_f((tr['returned_share'] or 0) * 100, '.0f')}% back)"
    )
    click.echo(f"wall time {s['wall_s']:.0f} s; plot: {out / 'demo.png'}; figures: {out}/")


def register(cli: click.Group) -> None:
    """Add ``demo`` to the CLI."""
    cli.add_command(demo)
