"""``greenllm config check FILE``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from greenllm.cli.output import emit_json, print_table
from greenllm.config import load_cluster_config, registered_policies
from greenllm.devices.catalog import CATALOG
from greenllm.power_domains import oversubscription

CHECK_HELP = (
    "Validate FILE (a cluster.yaml); print a summary, or one line naming the field that "
    "is wrong. The format is described in docs/cluster-yaml.md.\n\n\b\n"
    f"GPU types (nodes[].gpus[].type): {', '.join(CATALOG)}\n"
    f"Policies (policy): {', '.join(registered_policies())}"
)


@click.group("config")
def config_group() -> None:
    """Validate and inspect cluster.yaml (format: docs/cluster-yaml.md)."""


@config_group.command("check", help=CHECK_HELP)
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON document.")
def check(file: Path, as_json: bool) -> None:
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
    unlisted = [n.name for n in cfg.nodes if not n.gpus]
    summary["nodes_without_gpu_list"] = unlisted
    layout = cfg.domain_layout()
    domain_rows: list[dict[str, Any]] = [
        {
            "name": name,
            "parent": layout.names[parent] if parent >= 0 else None,
            "usable_w": usable_w,
            "nodes": layout.nodes_under(at),
        }
        for at, (name, parent, usable_w) in enumerate(
            zip(layout.names, layout.parent, layout.usable_w, strict=True)
        )
    ]
    oversubscribed = oversubscription(cfg.power_domains)
    summary["power_domains"] = domain_rows
    summary["oversubscribed"] = oversubscribed
    if as_json:
        emit_json(summary)
        return
    click.echo(
        f"{file}: valid. {_n(len(cfg.nodes), 'node')}, {_n(len(cfg.gpu_types()), 'GPU')} listed, "
        f"budget {cfg.budget.budget_w:g} W (reserve {cfg.budget.reserve_w:g} W, "
        f"{_tdp_share(cfg.budget.budget_w, cfg.sum_tdp_w(), unlisted)}), policy {cfg.policy}"
    )
    if unlisted:
        click.echo(
            f"note: {_n(len(unlisted), 'nvml node')} ({', '.join(unlisted)}) without a GPU "
            "list: their GPUs are discovered when the agent starts, so the summed TDP and "
            "the budget check cover listed GPUs only"
        )
    rows = [
        [n["name"], n["backend"], ", ".join(_counts(n["gpus"])) or "(discovered at start)"]
        for n in nodes
    ]
    print_table(None, ["node", "backend", "gpus"], rows)
    if layout.names:
        domains = [
            [d["name"], d["parent"] or "-", d["usable_w"], len(d["nodes"])] for d in domain_rows
        ]
        print_table("Power domains", ["domain", "parent", "limit - reserve W", "nodes"], domains)
    for line in oversubscribed:
        click.echo(f"note: {line} (allowed: the parent binds first)")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _tdp_share(budget_w: float, sum_tdp_w: float, unlisted: list[str]) -> str:
    """``"60% of summed TDP 4688 W"``, or why that share is unknown."""
    if sum_tdp_w <= 0:
        return "summed TDP unknown: no GPUs listed"
    which = "the listed GPUs' summed TDP" if unlisted else "summed TDP"
    return f"{100 * budget_w / sum_tdp_w:.0f}% of {which} {sum_tdp_w:g} W"


def _counts(types: Iterable[str]) -> list[str]:
    out: dict[str, int] = {}
    for t in types:
        out[t] = out.get(t, 0) + 1
    return [f"{c} x {t}" for t, c in out.items()]


def register(cli: click.Group) -> None:
    """Add the ``config`` commands to the CLI."""
    cli.add_command(config_group)
