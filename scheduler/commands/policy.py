"""``greenllm policy set NAME``: switch the allocation policy."""

from __future__ import annotations

from pathlib import Path

import click

from greenllm.cli.options import CONFIG_OPTION
from greenllm.cli.output import emit_json
from greenllm.rpc.client import connect


@click.group("policy")
def policy() -> None:
    """The allocation policy."""


@policy.command("set")
@click.argument("name")
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def set_policy(name: str, config_path: Path | None, as_json: bool) -> None:
    """Make NAME the controller's allocation policy (see cluster.yaml for the names)."""
    with connect(config_path) as client:
        reply = client.set_policy(name)
    if as_json:
        emit_json({"policy": reply.name})
    else:
        click.echo(f"policy set to {reply.name}")


def register(cli: click.Group) -> None:
    """Add ``policy`` to the CLI."""
    cli.add_command(policy)
