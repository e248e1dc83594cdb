"""Specs of the GPU types the simulator knows, from public figures.

Limits, clocks and idle power come from ``nvidia-smi -q`` captures (see
``shared/gpu-reference.md``); peak throughput and memory bandwidth from the
vendors' datasheets (dense bf16/fp16 tensor TFLOP/s, HBM/GDDR GB/s).
"""

from __future__ import annotations

from dataclasses import dataclass

from greenllm.errors import ConfigError

#: SM clocks step in this many MHz on every listed type.
SM_CLOCK_STEP_MHZ = 15


@dataclass(frozen=True)
class GPUSpec:
    """The published figures of one GPU type.

    Attributes:
        name: Catalog name, e.g. ``"H100-SXM"``.
        max_power_limit_w: Highest (and default) power limit, watts.
        min_power_limit_w: Lowest settable power limit, watts.
        idle_power_w: Board power with nothing running, watts.
        max_sm_clock_mhz: Highest SM clock, MHz.
        min_sm_clock_mhz: Lowest supported SM clock, MHz.
        peak_tflops: Dense bf16/fp16 tensor throughput, TFLOP/s.
        memory_bandwidth_gbps: Device memory bandwidth, GB/s.
        memory_mib: Device memory size, MiB.
        sm_clock_step_mhz: SM clock step, MHz.
    """

    name: str
    max_power_limit_w: float
    min_power_limit_w: float
    idle_power_w: float
    max_sm_clock_mhz: int
    min_sm_clock_mhz: int
    peak_tflops: float
    memory_bandwidth_gbps: float
    memory_mib: int
    sm_clock_step_mhz: int = SM_CLOCK_STEP_MHZ

    @property
    def tdp_w(self) -> float:
        """Thermal design power (= default = max power limit), watts."""
        return self.max_power_limit_w

    def supported_sm_clocks_mhz(self) -> list[int]:
        """Every settable SM clock, ascending, MHz."""
        top = self.max_sm_clock_mhz
        clocks = list(range(top, self.min_sm_clock_mhz - 1, -self.sm_clock_step_mhz))
        return sorted(clocks)


CATALOG: dict[str, GPUSpec] = {
    spec.name: spec
    for spec in (
        GPUSpec("H100-SXM", 700, 200, 69, 1980, 210, 989, 3350, 81559),
        GPUSpec("A100-SXM4", 400, 100, 50, 1410, 210, 312, 1555, 40960),
        GPUSpec("A100-PCIe", 300, 150, 40, 1410, 210, 312, 1935, 81920),
        GPUSpec("L4", 72, 40, 16, 2040, 210, 121, 300, 23034),
        GPUSpec("V100-SXM2", 300, 150, 43, 1530, 135, 125, 900, 16384),
        GPUSpec("A40", 300, 100, 30, 1740, 210, 150, 696, 46068),
    )
}


def get_spec(gpu_type: str) -> GPUSpec:
    """Look up a GPU type by name (case-insensitive).

    Raises:
        ConfigError: The type is not in the catalog; the message lists the known ones.
    """
    for name, spec in CATALOG.items():
        if name.lower() == gpu_type.lower():
            return spec
    known = ", ".join(CATALOG)
    raise ConfigError(f"unknown GPU type {gpu_type!r} (known: {known})")
