"""``greenllm up`` and ``greenllm down``: the cluster on Ray."""

from __future__ import annotations

from pathlib import Path

import click

from greenllm.cli.options import CONFIG_OPTION
from greenllm.cli.output import emit_json, progress_console
from greenllm.config import default_config_path, load_cluster_config
from scheduler.runtime import lifecycle


@click.command("up")
@CONFIG_OPTION
@click.option(
    "--address",
    help="Join this running Ray cluster (HEAD:6379, after `ray start --head` there and "
    "`ray start --address` on the other machines) instead of starting one: one agent per Ray "
    "node, the controller on this machine with TLS.",
)
@click.option(
    "--timeout-s",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Give up (and say which agents are missing) after this many seconds.",
)
@click.option(
    "--agents",
    type=click.Choice(["ray", "service"]),
    default="ray",
    show_default=True,
    help="ray: an agent per Ray node, started as a Ray actor. service: start none; each "
    "machine runs `greenllm agent --node NAME` itself (e.g. the systemd unit that alone holds "
    "CAP_SYS_ADMIN for NVML).",
)
@click.option("--json", "as_json", is_flag=True, help="Print where everything is as JSON.")
def up_command(
    config_path: Path | None, address: str | None, timeout_s: float, agents: str, as_json: bool
) -> None:
    """Start the cluster: Ray nodes (one per node of the config, or join --address), the
    controller as a detached Ray actor, and one agent per Ray node. Returns when every
    agent has registered."""
    path = config_path or default_config_path()
    config = load_cluster_config(path)
    console = progress_console()
    result = lifecycle.up(
        path,
        config,
        address,
        log=console.print,
        timeout_s=timeout_s,
        start_agents=agents == "ray",
    )
    doc = {
        "ray_address": result.ray_address,
        "controller_address": result.controller_address,
        "metrics_url": result.metrics_url,
        "ray_dashboard": None,
        "started_ray": result.started_ray,
        "startup_s": round(result.startup_s, 2),
        "nodes": result.nodes,
        "notes": result.notes,
    }
    if as_json:
        emit_json(doc)
        return
    click.echo(f"greenllm is up in {result.startup_s:.1f} s ({len(result.nodes)} nodes)")
    click.echo(f"  controller:     {result.controller_address}")
    click.echo(f"  metrics:        {result.metrics_url or 'disabled'}")
    click.echo(f"  Ray:            {result.ray_address}")
    click.echo(f"  nodes:          {', '.join(result.nodes) or 'none yet'}")
    for note in result.notes:
        click.echo(f"  note:           {note}")
    if result.started_ray:
        click.echo("  Ray dashboard:  not started (it costs a core on small machines)")
    click.echo("Next: greenllm status, greenllm submit JOB.yaml, greenllm down")


@click.command("down")
@CONFIG_OPTION
def down_command(config_path: Path | None) -> None:
    """Stop everything 'greenllm up' started and restore GPU defaults."""
    config = load_cluster_config(config_path or default_config_path())
    console = progress_console()
    if lifecycle.down(config, log=console.print):
        click.echo("greenllm is down")
    else:
        click.echo(f"nothing is up for {config.state_dir}")


def register(cli: click.Group) -> None:
    """Add ``up`` and ``down`` to the CLI."""
    cli.add_command(up_command)
    cli.add_command(down_command)
