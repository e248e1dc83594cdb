"""``greenllm budget set WATTS``: change the cluster power budget."""

from __future__ import annotations

from pathlib import Path

import click

from greenllm.cli.options import CONFIG_OPTION
from greenllm.cli.output import emit_json
from greenllm.rpc.client import connect


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
    """Set the cluster GPU power budget to WATTS; limits follow within a control period."""
    with connect(config_path) as client:
        reply = client.set_budget(watts, reserve_w)
    if as_json:
        emit_json({"budget_w": reply.budget_w, "reserve_w": reply.reserve_w})
    else:
        click.echo(f"budget set to {reply.budget_w:g} W (reserve {reply.reserve_w:g} W)")


def register(cli: click.Group) -> None:
    """Add ``budget`` to the CLI."""
    cli.add_command(budget)
