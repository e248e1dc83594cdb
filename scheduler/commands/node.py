"""``greenllm node down NAME``: tell the controller that a node's machine is powered off."""

from __future__ import annotations

from pathlib import Path

import click

from greenllm.cli.options import CONFIG_OPTION, JSON_OPTION
from greenllm.cli.output import emit_json
from greenllm.proto.v1 import cluster_pb2
from greenllm.rpc.client import connect


@click.group("node")
def node() -> None:
    """What an operator knows of a node that the controller cannot see."""


@node.command("down")
@click.argument("name")
@click.option(
    "--reason", default="", help="Why it is down, for the event log (default: an operator)."
)
@CONFIG_OPTION
@JSON_OPTION
def down(name: str, reason: str, config_path: Path | None, as_json: bool) -> None:
    """Say that node NAME is powered off (its machine is gone or shut down).

    A node that stops reporting is counted at the power limits its GPUs may still hold,
    however long it is silent: its agent may have died with its GPUs still up. Once it is
    known down it is counted at no more than its fail-safe limits (what its agent boots at)
    and its shards are placed elsewhere at once, until its agent registers again. A node
    whose Ray node dies is marked down by the controller itself. Refused while the node's
    agent still reports.
    """
    with connect(config_path) as client:
        reply = client.node_down(name, reason or "an operator said so")
    phase = cluster_pb2.NodePhase.Name(reply.phase).removeprefix("NODE_PHASE_").lower()
    if as_json:
        emit_json({"node": reply.node, "changed": reply.changed, "phase": phase})
    elif reply.changed:
        click.echo(
            f"node {reply.node} is down: counted at its fail-safe limits, its shards placed "
            "elsewhere, until its agent registers again"
        )
    else:
        click.echo(f"node {reply.node} was already known down")


def register(cli: click.Group) -> None:
    """Add ``node`` to the CLI."""
    cli.add_command(node)
