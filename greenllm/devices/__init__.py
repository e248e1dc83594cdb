"""GPU device layer: one abstract interface, NVML and simulated backends."""

from greenllm.devices.base import GPU, GPUSample, PowerLimitConstraints
from greenllm.devices.catalog import CATALOG, GPUSpec, get_spec
from greenllm.devices.physics import Workload
from greenllm.devices.simulated import SimulatedGPU

__all__ = [
    "CATALOG",
    "GPU",
    "GPUSample",
    "GPUSpec",
    "PowerLimitConstraints",
    "SimulatedGPU",
    "Workload",
    "get_spec",
]
