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
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def set_budget(
    watts: float, reserve_w: float | None, config_path: Path | None, as_json: bool
) -> None:
    """Set the cluster GPU power budget to WATTS; limits follow within a control period.

    When GPUs cannot come down far enough (they refused lowerings, their node is stale, or
    the budget is below their minimum limits), the budget is still set and every GPU that
    can lower does; the command warns how many watts stay above it, and why, and exits 3.
    """
    with connect(config_path) as client:
        reply = client.set_budget(watts, reserve_w)
    if as_json:
        emit_json(
            {
                "budget_w": reply.budget_w,
                "reserve_w": reply.reserve_w,
                "shortfall_w": reply.shortfall_w,
                "shortfall_reason": reply.shortfall_reason,
            }
        )
    else:
        click.echo(f"budget set to {reply.budget_w:g} W (reserve {reply.reserve_w:g} W)")
    if reply.shortfall_w > 0:
        click.echo(
            f"warning: the GPUs will still hold {reply.shortfall_w:g} W above the budget: "
            f"{reply.shortfall_reason}",
            err=True,
        )
        raise SystemExit(SHORTFALL_EXIT)


def register(cli: click.Group) -> None:
    """Add ``budget`` to the CLI."""
    cli.add_command(budget)
