"""``greenllm agent``: run one node's agent in the foreground."""

from __future__ import annotations

from pathlib import Path

import click

from greenllm.config import default_config_path, load_cluster_config
from greenllm.service.foreground import configure_logging, run_foreground


@click.command("agent")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="cluster.yaml (default: $GREENLLM_CONFIG, ./cluster.yaml, or the embedded default).",
)
@click.option("--node", required=True, help="This node's name in the config.")
@click.option(
    "--controller",
    "controller_address",
    help="The controller's host:port (default: where it publishes its address: the state "
    "directory, the config's controller.address, or the Ray cluster of this machine).",
)
@click.option(
    "--ca-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="CA certificate the controller's TLS certificate is signed by (the state "
    "directory's tls/ca.pem on the controller's machine); default: the one the controller "
    "publishes beside its address, else the config's auth.tls.",
)
@click.option(
    "--batch-ticks",
    type=click.IntRange(min=1),
    help="Telemetry ticks per message: GPUs are sampled every telemetry interval and sent "
    "this many ticks at a time (cheaper for the controller, later to arrive). Default: one "
    "control period's worth.",
)
@click.option("--verbose", is_flag=True, help="Log at DEBUG level.")
def agent(
    config_path: Path | None,
    node: str,
    controller_address: str | None,
    ca_file: Path | None,
    batch_ticks: int | None,
    verbose: bool,
) -> None:
    """Run the node agent: stream telemetry to the controller, apply its commands, and
    fall back to the fail-safe power limits when the controller is gone.

    Its credential is NODE's token, from $GREENLLM_AGENT_TOKEN (`greenllm token issue
    --node NODE` prints it on the controller's machine), else derived from the state
    directory's tokens file (on the controller's machine)."""
    config = load_cluster_config(config_path or default_config_path())
    from greenllm.rpc.locate import find_controller
    from workers.agent.agent import NodeAgent  # the agent's imports: only when it runs

    root_pem = ca_file.read_bytes() if ca_file is not None else None
    if controller_address is None:
        endpoint = find_controller(config)
        controller_address, root_pem = endpoint.address, root_pem or endpoint.ca_pem
    node_agent = NodeAgent(
        config,
        node,
        batch_ticks=batch_ticks,
        address=controller_address,
        tls_root_pem=root_pem,
    )
    configure_logging(verbose)
    run_foreground(node_agent.run())


def register(cli: click.Group) -> None:
    """Add ``agent`` to the CLI."""
    cli.add_command(agent)
