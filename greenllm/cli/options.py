"""Options shared by CLI commands."""

from __future__ import annotations

from pathlib import Path

import click

#: ``--config FILE``: the cluster.yaml naming the controller (and the nodes).
CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="cluster.yaml (default: $GREENLLM_CONFIG, ./cluster.yaml, or the embedded default).",
)

#: ``--json``: print one JSON document on stdout.
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
