"""Pick the GPUs of this node: NVML where an NVIDIA GPU is present, else simulated."""

from __future__ import annotations

from collections.abc import Callable

from greenllm.config import ClusterConfig, NodeConfig
from greenllm.devices.base import GPU
from greenllm.devices.simulated import SimulatedGPU
from greenllm.errors import DeviceNotFoundError


def simulated_gpus(
    node: NodeConfig, clock: Callable[[], float] | None = None, **kwargs: float
) -> list[GPU]:
    """The simulated GPUs a node's config describes, in index order."""
    return [
        SimulatedGPU(t, index=i, node=node.name, clock=clock, **kwargs)  # type: ignore[arg-type]
        for i, t in enumerate(node.gpu_types())
    ]


def get_gpus(
    config: ClusterConfig | None = None,
    node: str | None = None,
    backend: str = "auto",
) -> list[GPU]:
    """The GPUs of this node.

    Args:
        config: Cluster config describing simulated nodes (needed unless NVML is used).
        node: Node name in ``config``; defaults to the first node.
        backend: ``"auto"`` (NVML if an NVIDIA GPU is present, else simulated), ``"nvml"``
            or ``"simulated"``. A node whose config says ``backend: nvml`` always uses NVML.

    Raises:
        DeviceNotFoundError: NVML was required but no NVIDIA GPU is present.
        ConfigError: Simulated GPUs were needed but the node is not in the config.
    """
    node_cfg = None
    if config is not None:
        node_cfg = config.node(node) if node else config.nodes[0]
        if node_cfg.backend == "nvml":
            backend = "nvml"
    if backend in ("auto", "nvml"):
        from greenllm.devices.nvml import discover_nvml_gpus

        try:
            return list(discover_nvml_gpus())
        except DeviceNotFoundError:
            if backend == "nvml":
                raise
    if node_cfg is None:
        raise DeviceNotFoundError("no NVIDIA GPU found and no cluster config to simulate one")
    return simulated_gpus(node_cfg)
