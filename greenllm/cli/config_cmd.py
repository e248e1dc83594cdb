"""``greenllm config check FILE``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import click

from greenllm.cli.output import emit_json, print_table
from greenllm.config import load_cluster_config


@click.group("config")
def config_group() -> None:
    """Validate and inspect cluster.yaml."""


@config_group.command("check")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON document.")
def check(file: Path, as_json: bool) -> None:
    """Validate FILE; print a summary, or one line naming the field that is wrong."""
    cfg = load_cluster_config(file)
    nodes = [{"name": n.name, "backend": n.backend, "gpus": n.gpu_types()} for n in cfg.nodes]
    summary = {
        "file": str(file),
        "valid": True,
        "name": cfg.name,
        "policy": cfg.policy,
        "budget_w": cfg.budget.budget_w,
        "reserve_w": cfg.budget.reserve_w,
        "usable_budget_w": cfg.usable_budget_w(),
        "sum_tdp_w": cfg.sum_tdp_w(),
        "sum_min_power_limit_w": cfg.sum_min_power_limit_w(),
        "gpu_count": len(cfg.gpu_types()),
        "nodes": nodes,
        "control_period_s": cfg.control_period_s,
        "telemetry_interval_s": cfg.telemetry_interval_s,
        "failsafe_timeout_s": cfg.failsafe.timeout_s,
        "controller_address": cfg.controller.address,
        "state_dir": str(cfg.state_dir),
        "carbon_region": cfg.carbon.region,
    }
    if as_json:
        emit_json(summary)
        return
    click.echo(
        f"{file}: valid. {len(cfg.nodes)} nodes, {summary['gpu_count']} GPUs, "
        f"budget {cfg.budget.budget_w:g} W (reserve {cfg.budget.reserve_w:g} W, "
        f"{100 * cfg.budget.budget_w / cfg.sum_tdp_w():.0f}% of summed TDP "
        f"{cfg.sum_tdp_w():g} W), policy {cfg.policy}"
    )
    rows = [[n["name"], n["backend"], ", ".join(_counts(n["gpus"]))] for n in nodes]
    print_table(None, ["node", "backend", "gpus"], rows)


def _counts(types: Iterable[str]) -> list[str]:
    out: dict[str, int] = {}
    for t in types:
        out[t] = out.get(t, 0) + 1
    return [f"{c} x {t}" for t, c in out.items()]


def register(cli: click.Group) -> None:
    """Add the ``config`` commands to the CLI."""
    cli.add_command(config_group)
