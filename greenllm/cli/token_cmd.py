"""``greenllm token issue --node NAME``: a node's credential, for an agent run by hand."""

from __future__ import annotations

from pathlib import Path

import click

from greenllm.cli.options import CONFIG_OPTION
from greenllm.config import default_config_path, load_cluster_config
from greenllm.errors import GreenllmError
from greenllm.rpc.auth import read_tokens


@click.group("token")
def token() -> None:
    """Credentials of the cluster (read from the state directory's tokens file: run these
    on the controller's machine)."""


@token.command("issue")
@CONFIG_OPTION
@click.option("--node", required=True, help="The node the token is for.")
def issue(config_path: Path | None, node: str) -> None:
    """Print NODE's token: it lets an agent register as NODE and nothing else. On that
    machine: export GREENLLM_AGENT_TOKEN=<token>; greenllm agent --node NODE."""
    config = load_cluster_config(config_path or default_config_path())
    if not config.auth.enabled:
        raise GreenllmError("auth is disabled in this config (auth.enabled: false): no tokens")
    click.echo(read_tokens(config.state_dir).node(node))


def register(cli: click.Group) -> None:
    """Add ``token`` to the CLI."""
    cli.add_command(token)
