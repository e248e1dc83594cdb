"""``greenllm policy set NAME`` and ``greenllm policy list``: the allocation policy."""

from __future__ import annotations

from pathlib import Path

import click

from greenllm.cli.options import CONFIG_OPTION, JSON_OPTION
from greenllm.cli.output import emit_json, print_table
from greenllm.policy_guide import ORACLE, guide, live_policies, policy_help
from greenllm.rpc.client import connect

SET_HELP = (
    "Make NAME the controller's allocation policy; limits follow within a control period."
    "\n\n\b\nPolicies:\n"
    + policy_help()
    + "\n\nSee `greenllm policy list` and docs/policies.md for when to use each."
)


@click.group("policy")
def policy() -> None:
    """The allocation policy: how the budget is split among GPUs."""


@policy.command("set", help=SET_HELP)
@click.argument("name", metavar="NAME")
@CONFIG_OPTION
@JSON_OPTION
def set_policy(name: str, config_path: Path | None, as_json: bool) -> None:
    with connect(config_path) as client:
        reply = client.set_policy(name)
    if as_json:
        emit_json({"policy": reply.name})
    else:
        click.echo(f"policy set to {reply.name}")


@policy.command("list")
@JSON_OPTION
def list_policies(as_json: bool) -> None:
    """List the policies: what each optimises and when to use it (no controller needed)."""
    names = [*live_policies(), ORACLE]
    docs = [
        {
            "name": n,
            "optimises": guide(n).optimises,
            "when": guide(n).when,
            "live": n != ORACLE,
        }
        for n in names
    ]
    if as_json:
        emit_json({"policies": docs})
        return
    rows = [[d["name"], d["optimises"], d["when"]] for d in docs]
    print_table("allocation policies", ["policy", "optimises", "use it when"], rows)


def register(cli: click.Group) -> None:
    """Add ``policy`` to the CLI."""
    cli.add_command(policy)
