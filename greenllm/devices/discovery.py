"""Pick the GPUs of this node: the node's configured backend decides.

- A node named in the cluster config gets what its ``backend`` says: ``simulated`` gives the
  GPUs its ``gpus`` entry describes even on a machine whose NVML works (the demo's three
  simulated nodes never touch the real GPUs), ``nvml`` gives the real GPUs (or an error).
- ``backend="auto"`` (NVML where an NVIDIA GPU is present, else the first node's simulated
  GPUs) applies only where no node is named: CLI commands run without ``--node``.
- An explicit ``backend="nvml"`` or ``"simulated"`` (a CLI's ``--backend``) overrides both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from greenllm.config import ClusterConfig, NodeConfig
from greenllm.devices.base import GPU
from greenllm.devices.simulated import SimulatedGPU
from greenllm.errors import DeviceNotFoundError

logger = logging.getLogger(__name__)

#: Sub-folder of the state directory holding the settings to restore on each real GPU.
RESTORE_SUBDIR = "gpu-restore"


def simulated_gpus(
    node: NodeConfig, clock: Callable[[], float] | None = None, **kwargs: float
) -> list[GPU]:
    """The simulated GPUs a node's config describes, in index order."""
    return [
        SimulatedGPU(t, index=i, node=node.name, clock=clock, **kwargs)  # type: ignore[arg-type]
        for i, t in enumerate(node.gpu_types())
    ]


def restore_dir(config: ClusterConfig | None) -> Path | None:
    """Where real GPUs keep their settings to restore: ``<state_dir>/gpu-restore``."""
    return None if config is None else config.state_dir / RESTORE_SUBDIR


def nvml_gpus(config: ClusterConfig | None = None) -> list[GPU]:
    """This machine's NVIDIA GPUs that could be opened (the others are logged and skipped).

    Raises:
        DeviceNotFoundError: No NVML, no GPU, or none could be opened.
    """
    from greenllm.devices.nvml_discovery import discover_nvml

    found = discover_nvml(restore_dir=restore_dir(config))
    for skipped in found.unavailable:
        logger.warning("NVML GPU %d unavailable: %s", skipped.nvml_index, skipped.reason)
    return list(found.gpus)


def resolve_backend(config: ClusterConfig | None, node: str | None, backend: str) -> str:
    """The backend that applies: explicit, else the named node's, else ``"auto"``.

    Raises:
        ValueError: ``backend`` is not ``auto``, ``nvml`` or ``simulated``.
        ConfigError: ``node`` is not in ``config``.
    """
    if backend not in ("auto", "nvml", "simulated"):
        raise ValueError(f"backend must be auto, nvml or simulated, not {backend!r}")
    if backend != "auto":
        return backend
    if config is not None and node is not None:
        return config.node(node).backend
    return "auto"


def get_gpus(
    config: ClusterConfig | None = None,
    node: str | None = None,
    backend: str = "auto",
) -> list[GPU]:
    """The GPUs of this node.

    Args:
        config: Cluster config describing the nodes.
        node: Node name in ``config``. When given, that node's configured ``backend``
            decides (unless ``backend`` is explicit); when not, ``"auto"`` picks NVML where
            an NVIDIA GPU is present, else the first node's simulated GPUs.
        backend: ``"auto"``, or an explicit ``"nvml"`` / ``"simulated"``.

    Raises:
        DeviceNotFoundError: NVML was required but no usable NVIDIA GPU is present.
        ConfigError: The node is not in the config.
    """
    chosen = resolve_backend(config, node, backend)
    if chosen in ("auto", "nvml"):
        try:
            return nvml_gpus(config)
        except DeviceNotFoundError:
            if chosen == "nvml":
                raise
    if config is None:
        raise DeviceNotFoundError("no NVIDIA GPU found and no cluster config to simulate one")
    node_cfg = config.node(node) if node else config.nodes[0]
    if not node_cfg.gpus:
        raise DeviceNotFoundError(
            f"node {node_cfg.name} is configured for NVML and no NVIDIA GPU is usable here"
        )
    return simulated_gpus(node_cfg)
