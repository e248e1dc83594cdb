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

#: ``--node NAME``: which node of the config (default: the first).
NODE_OPTION = click.option("--node", help="Node of the config (default: the first).")

#: ``--backend``: real GPUs through NVML, or the config's simulated GPUs.
BACKEND_OPTION = click.option(
    "--backend",
    type=click.Choice(["auto", "nvml", "simulated"]),
    default="auto",
    show_default=True,
    help="auto uses NVML where an NVIDIA GPU is present, else the config's simulated GPUs.",
)

#: ``--json``: print one JSON document on stdout.
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
