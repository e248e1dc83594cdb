"""``greenllm agent``: run one node's agent in the foreground."""

from __future__ import annotations

from pathlib import Path

import click

from greenllm.config import default_config_path, load_cluster_config
from greenllm.rpc.foreground import configure_logging, run_foreground


@click.command("agent")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="cluster.yaml (default: $GREENLLM_CONFIG, ./cluster.yaml, or the embedded default).",
)
@click.option("--node", required=True, help="This node's name in the config.")
@click.option(
    "--batch-ticks",
    type=click.IntRange(min=1),
    help="Telemetry ticks per message: GPUs are sampled every telemetry interval and sent "
    "this many ticks at a time (cheaper for the controller, later to arrive). Default: one "
    "control period's worth.",
)
@click.option("--verbose", is_flag=True, help="Log at DEBUG level.")
def agent(config_path: Path | None, node: str, batch_ticks: int | None, verbose: bool) -> None:
    """Run the node agent: stream telemetry to the controller, apply its commands, and
    fall back to the fail-safe power limits when the controller is gone."""
    config = load_cluster_config(config_path or default_config_path())
    from workers.agent.agent import NodeAgent  # the agent's imports: only when it runs

    node_agent = NodeAgent(config, node, batch_ticks=batch_ticks)
    configure_logging(verbose)
    run_foreground(node_agent.run())


def register(cli: click.Group) -> None:
    """Add ``agent`` to the CLI."""
    cli.add_command(agent)
