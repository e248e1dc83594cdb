"""GPU device layer: one abstract interface, NVML and simulated backends."""

from greenllm.devices.base import GPU, UNAVAILABLE, GPUSample, PowerLimitConstraints, is_available
from greenllm.devices.catalog import (
    CATALOG,
    GPUSpec,
    get_spec,
    spec_for_inventory,
    spec_from_reported,
)
from greenllm.devices.physics import Workload
from greenllm.devices.simulated import SimulatedGPU

__all__ = [
    "CATALOG",
    "GPU",
    "UNAVAILABLE",
    "GPUSample",
    "GPUSpec",
    "PowerLimitConstraints",
    "SimulatedGPU",
    "Workload",
    "get_spec",
    "is_available",
    "spec_for_inventory",
    "spec_from_reported",
]
