"""``greenllm budget set WATTS``: change the cluster power budget."""

from __future__ import annotations

from pathlib import Path

import click

from greenllm.cli.options import CONFIG_OPTION
from greenllm.cli.output import emit_json
from greenllm.rpc.client import connect

#: Exit status of ``budget set`` when the budget was set but the GPUs cannot meet it.
SHORTFALL_EXIT = 3


@click.group("budget")
def budget() -> None:
    """The cluster power budget."""


@budget.command("set")
@click.argument("watts", type=click.FloatRange(min=0, min_open=True))
@click.option("--reserve", "reserve_w", type=click.FloatRange(min=0), help="New reserve, watts.")
@click.option(
    "--domain",
    default="",
    metavar="NAME",
    help="Set this power domain's limit_w (and --reserve its reserve_w) instead of the "
    "cluster budget (power_domains in cluster.yaml; `greenllm status` lists them).",
)
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def set_budget(
    watts: float, reserve_w: float | None, domain: str, config_path: Path | None, as_json: bool
) -> None:
    """Set the cluster GPU power budget to WATTS; limits follow within a control period.
    With --domain NAME, set that power domain's limit to WATTS: its GPUs' limits then sum
    to at most WATTS - its reserve, beside the cluster budget.

    When GPUs cannot come down far enough (they refused lowerings, their node is stale, or
    the budget is below their minimum limits), the budget is still set and every GPU that
    can lower does; the command warns how many watts stay above it, and why, and exits 3.
    """
    with connect(config_path) as client:
        reply = client.set_budget(watts, reserve_w, domain)
    what = f"domain {domain} limit" if domain else "budget"
    if as_json:
        emit_json(
            {
                "budget_w": reply.budget_w,
                "reserve_w": reply.reserve_w,
                "shortfall_w": reply.shortfall_w,
                "shortfall_reason": reply.shortfall_reason,
                "domain": domain or None,
            }
        )
    else:
        click.echo(f"{what} set to {reply.budget_w:g} W (reserve {reply.reserve_w:g} W)")
    if reply.shortfall_w > 0:
        click.echo(
            f"warning: the GPUs will still hold {reply.shortfall_w:g} W above the {what}: "
            f"{reply.shortfall_reason}",
            err=True,
        )
        raise SystemExit(SHORTFALL_EXIT)


def register(cli: click.Group) -> None:
    """Add ``budget`` to the CLI."""
    cli.add_command(budget)
