"""``greenllm controller``: run the controller in the foreground."""

from __future__ import annotations

from pathlib import Path

import click

from greenllm.config import default_config_path, load_cluster_config
from greenllm.service.foreground import configure_logging, run_foreground


@click.command("controller")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="cluster.yaml (default: $GREENLLM_CONFIG, ./cluster.yaml, or the embedded default).",
)
@click.option("--verbose", is_flag=True, help="Log at DEBUG level.")
def controller(config_path: Path | None, verbose: bool) -> None:
    """Run the controller: serve the agents and the cluster API, keep the cluster under its
    power budget, and export Prometheus metrics."""
    config = load_cluster_config(config_path or default_config_path())
    configure_logging(verbose)
    from scheduler.server.app import Controller  # the server's imports: only when it runs

    run_foreground(Controller(config).serve())


def register(cli: click.Group) -> None:
    """Add ``controller`` to the CLI."""
    cli.add_command(controller)
