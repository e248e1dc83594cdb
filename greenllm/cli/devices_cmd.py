"""``greenllm gpus``: this node's GPUs, real or simulated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from greenllm.cli.options import BACKEND_OPTION, CONFIG_OPTION, JSON_OPTION, NODE_OPTION
from greenllm.cli.output import emit_json, print_table
from greenllm.config import default_config_path, load_cluster_config
from greenllm.devices.base import GPU
from greenllm.devices.discovery import get_gpus


def gpu_info(gpu: GPU) -> dict[str, Any]:
    """Describe one GPU: type, limits, clocks and current readings."""
    c = gpu.power_limit_constraints()
    clocks = gpu.supported_sm_clocks_mhz()
    return {
        "index": gpu.index,
        "uuid": gpu.uuid,
        "type": gpu.gpu_type,
        "backend": "simulated" if gpu.uuid.startswith("sim-") else "nvml",
        "power_limit_w": gpu.power_limit_w(),
        "min_power_limit_w": c.min_power_limit_w,
        "max_power_limit_w": c.max_power_limit_w,
        "default_power_limit_w": c.default_power_limit_w,
        "power_w": gpu.power_w(),
        "sm_clock_mhz": gpu.sm_clock_mhz(),
        "min_sm_clock_mhz": clocks[0] if clocks else None,
        "max_sm_clock_mhz": clocks[-1] if clocks else None,
        "memory_total_mib": gpu.memory_total_mib(),
        "memory_used_mib": gpu.memory_used_mib(),
        "temperature_c": gpu.temperature_c(),
        "utilization_pct": gpu.utilization_pct(),
    }


@click.command("gpus")
@CONFIG_OPTION
@NODE_OPTION
@BACKEND_OPTION
@JSON_OPTION
def gpus(config_path: Path | None, node: str | None, backend: str, as_json: bool) -> None:
    """List one node's GPUs with their power limits and clocks: real ones through NVML
    where an NVIDIA GPU is present, else the config's simulated GPUs of that node. The
    first line (and the JSON's ``node``) says which node of which config is shown."""
    path = config_path or default_config_path()
    cfg = load_cluster_config(path)
    node_name = cfg.node(node).name if node else cfg.nodes[0].name
    devices = get_gpus(cfg, node=node, backend=backend)
    try:
        infos = [gpu_info(g) for g in devices]
    finally:
        for g in devices:
            g.close()
    backends = sorted({i["backend"] for i in infos})
    if as_json:
        emit_json(
            {
                "node": node_name,
                "config": str(path),
                "backend": ",".join(backends) or None,
                "gpus": infos,
            }
        )
        return
    which = "" if node else " (the config's first node; --node NAME shows another)"
    kinds = " and ".join(backends) or "no"
    click.echo(f"node {node_name} of {path}{which}: {len(infos)} {kinds} GPUs")
    rows = [
        [
            i["index"],
            i["type"],
            i["backend"],
            f"{i['power_w']:.0f}",
            f"{i['power_limit_w']:g} ({i['min_power_limit_w']:g}-{i['max_power_limit_w']:g})",
            f"{i['sm_clock_mhz']:.0f} ({i['min_sm_clock_mhz']}-{i['max_sm_clock_mhz']})",
            f"{i['memory_used_mib']:.0f}/{i['memory_total_mib']:.0f}",
        ]
        for i in infos
    ]
    cols = ["gpu", "type", "backend", "power W", "limit W (range)", "SM MHz (range)", "mem MiB"]
    print_table(None, cols, rows)


def register(cli: click.Group) -> None:
    """Add ``gpus`` to the CLI."""
    cli.add_command(gpus)
