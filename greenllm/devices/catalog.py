"""GPU types: published figures, used as the physics prior (never as the enforceable range).

A real GPU's power-limit range, default limit and supported clocks come from what it reports
(its NVML inventory); the catalog supplies what NVML cannot tell (idle and static power, peak
throughput, memory bandwidth) so the physical model has a prior to start from. Call
:func:`spec_for_inventory` with what a GPU reports: it keeps the catalog's prior for a known
type and overrides the limits and clocks with the reported ones, and scales a prior from the
reported range for a type the catalog does not know (:func:`spec_from_reported`).

Limits, clocks and idle power come from ``nvidia-smi -q`` captures (see
``shared/gpu-reference.md``) or the vendors' datasheets; peak throughput is dense bf16/fp16
tensor TFLOP/s, memory bandwidth GB/s. Each newer entry cites its sources beside it; figures
marked "estimate" were not found published and should be checked with
``scripts/gpu_probe.py`` on the real GPU.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

from greenllm.errors import ConfigError

#: SM clocks step in this many MHz on every listed type.
SM_CLOCK_STEP_MHZ = 15

#: Static power under load for a spec without a figure, fraction of the maximum limit.
STATIC_FRACTION_OF_MAX = 0.15
#: Where a spec's figures come from (:attr:`GPUSpec.origin`).
ORIGIN_CATALOG = "catalog"
ORIGIN_CATALOG_REPORTED = "catalog+reported"
ORIGIN_REPORTED = "reported"


@dataclass(frozen=True)
class GPUSpec:
    """The figures of one GPU type.

    Attributes:
        name: Catalog name, e.g. ``"H100-SXM"`` (or the NVML product name for a type the
            catalog does not know).
        max_power_limit_w: Highest power limit (the TDP the physical model scales by), watts.
        min_power_limit_w: Lowest settable power limit, watts.
        idle_power_w: Board power with nothing running, watts.
        max_sm_clock_mhz: Highest SM clock, MHz.
        min_sm_clock_mhz: Lowest supported SM clock, MHz.
        peak_tflops: Dense bf16/fp16 tensor throughput, TFLOP/s.
        memory_bandwidth_gbps: Device memory bandwidth, GB/s.
        memory_mib: Device memory size, MiB.
        sm_clock_step_mhz: SM clock step, MHz.
        default_power_limit_w: The limit the GPU boots with, watts (None: the maximum).
        origin: ``"catalog"`` (published figures), ``"catalog+reported"`` (catalog prior,
            limits and clocks as the GPU reports them) or ``"reported"`` (prior scaled from
            what an unknown GPU reports).
        static_power_w: Power under load that the SM clock does not scale, watts (None:
            unknown, :attr:`load_static_power_w` scales one from the maximum limit).
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
    default_power_limit_w: float | None = None
    origin: str = ORIGIN_CATALOG
    static_power_w: float | None = None

    @property
    def load_static_power_w(self) -> float:
        """Static power under load, watts: the type's figure, or a prior scaled from TDP."""
        if self.static_power_w is not None:
            return self.static_power_w
        return STATIC_FRACTION_OF_MAX * self.max_power_limit_w

    @property
    def tdp_w(self) -> float:
        """Thermal design power (= the maximum power limit), watts."""
        return self.max_power_limit_w

    @property
    def boot_power_limit_w(self) -> float:
        """The default (boot) power limit, watts."""
        if self.default_power_limit_w is None:
            return self.max_power_limit_w
        return self.default_power_limit_w

    def supported_sm_clocks_mhz(self) -> list[int]:
        """Every settable SM clock, ascending, MHz."""
        top = self.max_sm_clock_mhz
        clocks = list(range(top, self.min_sm_clock_mhz - 1, -self.sm_clock_step_mhz))
        return sorted(clocks)


# Columns: name, max (= default) limit W, min limit W, idle W, max SM MHz, min SM MHz,
# dense bf16 TFLOP/s, memory GB/s, memory MiB; static W (under load). Idle/static sources:
# [ref] shared/gpu-reference.md (`nvidia-smi -q` idle readings).
# [plus] nvidia-smi power.draw at 0 % utilisation, UCLA PLUS Lab 2025-07-03: A100-SXM4-40GB
#   52.5-54.3 W (4 boards), A100 80GB PCIe 43.9-47.8 W (8 boards),
#   https://huggingface.co/spaces/seawolf2357/PLUS_Lab_GPUs (gpus.csv).
# [park] Vadari, "The Model Parking Tax", arXiv 2605.23918: a CUDA context adds 26-50 W over
#   bare idle on HBM boards (H100, A100), 66 W on GDDR6 (L40S): an upper bound on static.
# [zeus] No per-type static figure is published: each is an estimate inside the window the
#   Zeus 40%-cap point allows (0.12-0.155 of TDP; 0.13-0.18 where 40% is under the minimum
#   limit), >= idle except on L4 (idle is 0.22 of its TDP; load power never goes under idle).
CATALOG: dict[str, GPUSpec] = {
    spec.name: spec
    for spec in (
        # Idle 69 W [ref]; static 104 W = idle + 35 W ([park] 26-50 W), estimate [zeus].
        GPUSpec("H100-SXM", 700, 200, 69, 1980, 210, 989, 3350, 81559, static_power_w=104),
        # Idle 50 W [ref], 52.5-54.3 W [plus]; static 53 W, estimate [zeus] (at most ~60 W).
        GPUSpec("A100-SXM4", 400, 100, 50, 1410, 210, 312, 1555, 40960, static_power_w=53),
        # Idle 45 W: 43.9-47.8 W [plus] ([ref]'s ~40 W was an estimate); static 52 W, est. [zeus].
        GPUSpec("A100-PCIe", 300, 150, 45, 1410, 210, 312, 1935, 81920, static_power_w=52),
        # Idle 16 W [ref]; static 12.5 W: top of the [zeus] window, estimate.
        GPUSpec("L4", 72, 40, 16, 2040, 210, 121, 300, 23034, static_power_w=12.5),
        # Idle 41-45 W [ref]; static 50 W = idle + 7 W, estimate [zeus].
        GPUSpec("V100-SXM2", 300, 150, 43, 1530, 135, 125, 900, 16384, static_power_w=50),
        # Idle ~30 W [ref] (estimate); static 45 W = idle + 15 W (GDDR6, [park] 66 W), est. [zeus].
        GPUSpec("A40", 300, 100, 30, 1740, 210, 150, 696, 46068, static_power_w=45),
        # H200-SXM (141 GB HBM3e). Sources:
        # - 700 W max (= default) limit, 141 GB, 4.8 TB/s, 989 TFLOP/s dense bf16 (1,979
        #   with sparsity): NVIDIA H200 datasheet, https://www.nvidia.com/en-us/data-center/h200/
        # - 200 W min / 700 W max / 700 W default limit: HGX Hopper baseboard Redfish
        #   "PowerLimitWatts" example (AllowableMin 200, AllowableMax 700, DefaultSetPoint
        #   700) in the DGX user guide, "Managing Power Capping",
        #   https://www.easymanua.ls/nvidia/dgx-b200/manual?p=61 ; the same range in an
        #   `nvidia-smi -q -d power` capture (driver 595.71),
        #   https://github.com/stackhpc/ansible-slurm-appliance/pull/975
        # - 1980 MHz max SM clock: `nvidia-smi -q -d CLOCK` on p5e.48xlarge (8 x H200,
        #   driver 550.90), https://github.com/awslabs/amazon-eks-ami/pull/1985
        # - 143771 MiB, 210 MHz min clock: estimate; check with scripts/gpu_probe.py.
        # - 75 W idle: vendor pages report nvidia-smi idle readings of 73.7 W (RunPod H200,
        #   https://conservemode.com/case-studies.html) and 80.3 W
        #   (https://api.serialalice.pt/alice-benchmark); static 104 W as H100-SXM's, est.
        GPUSpec("H200-SXM", 700, 200, 75, 1980, 210, 989, 4800, 143771, static_power_w=104),
        # H100-PCIe (80 GB HBM2e). Sources:
        # - 350 W max TDP, >2,000 GB/s: NVIDIA H100 PCIe product brief PB-11133-001_v02
        #   ("operates unconstrained up to its maximum thermal design power (TDP) level of
        #   350 W"), mirrored at
        #   https://manuals.plus/m/56b0c3ef7d0a1c470c0af8f05a0bd1f29a778007472ba941201fbbb185c9bccd
        # - 756 TFLOP/s dense bf16 (1,513 with sparsity), 2.0 TB/s: NVIDIA H100 datasheet,
        #   https://www.nvidia.com/en-us/data-center/h100/
        # - 1755 MHz max SM (boost) clock: product brief's board table; 200 W min limit,
        #   81559 MiB, ~50 W idle: estimate. Check with scripts/gpu_probe.py.
        # - 58 W static: estimate (idle + 8 W, in the [zeus] window).
        GPUSpec("H100-PCIe", 350, 200, 50, 1755, 210, 756, 2039, 81559, static_power_w=58),
        # L40S (48 GB GDDR6). Sources:
        # - 350 W max power, 48 GB, 864 GB/s, 362 TFLOP/s dense bf16 (733 with sparsity):
        #   NVIDIA L40S datasheet, https://www.nvidia.com/en-us/data-center/l40s/ (table
        #   reproduced at https://www.mullet.se/product.html?product_id=355414)
        # - 2520 MHz boost (max SM) clock, 1110 MHz base:
        #   https://www.itcreations.com/nvidia-gpu/nvidia-l40s-gpu-accelerator
        # - 100 W min limit (as L40/A40), 46068 MiB (as A40), ~35 W idle: estimate; check
        #   with scripts/gpu_probe.py. 50 W static: estimate (idle + 15 W, as A40; [park]
        #   measured this GDDR6 board's context adder at 66 W), in the [zeus] window.
        GPUSpec("L40S", 350, 100, 35, 2520, 210, 362, 864, 46068, static_power_w=50),
        # B200 (HGX B200, HBM3e). Sources:
        # - 1000 W max TDP, 8 TB/s, 2,250 TFLOP/s dense bf16 at 1,000 W (4,500 sparse): HGX
        #   B200 table at https://glennklockwood.com/garden/processors/B200 (from NVIDIA's
        #   Blackwell datasheet, https://www.nvidia.com/en-us/data-center/hgx/)
        # - 179 GB visible HBM3e (nvidia-smi memory.total on an HGX B200):
        #   https://docs.vultr.com/inference-cookbook/cuda/getting-started/hardware-overview
        # - 1965 MHz max SM clock: the clock NVIDIA's Blackwell benchmark scripts lock
        #   (`nvidia-smi -lgc 1965`); 200 W min limit: estimate. Check with
        #   scripts/gpu_probe.py.
        # - 110 W idle, 120 W static: estimates (H200's idle per watt of TDP; the highest
        #   static whose lowest clock still fits the 200 W minimum limit).
        GPUSpec("B200", 1000, 200, 110, 1965, 210, 2250, 8000, 183296, static_power_w=120),
    )
}

#: NVML product names -> catalog type, first match wins. Names as ``nvmlDeviceGetName``
#: (and ``nvidia-smi --query-gpu=name``) report them, e.g. ``"NVIDIA H200"``,
#: ``"NVIDIA H100 PCIe"``, ``"NVIDIA L40S"``, ``"NVIDIA B200"``. NVL (PCIe) variants of the
#: H100/H200 have other limits and stay unknown (a reported-range prior).
NVML_NAME_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), gpu_type)
    for pattern, gpu_type in (
        (r"\bH200\b(?!.*\bNVL\b)", "H200-SXM"),
        (r"\bH100\b.*\bPCIE\b", "H100-PCIe"),
        (r"\bH100\b.*\b(SXM\d?|HBM3)\b", "H100-SXM"),
        (r"\bA100\b.*\bSXM\d?\b", "A100-SXM4"),
        (r"\bA100\b.*\bPCIE\b", "A100-PCIe"),
        (r"\bV100\b.*\bSXM2\b", "V100-SXM2"),
        (r"\bL40S\b", "L40S"),
        (r"\bL4\b", "L4"),
        (r"\bA40\b", "A40"),
        (r"\bB200\b", "B200"),
    )
)


#: The catalog by lower-case name.
_BY_LOWER_NAME = {name.lower(): spec for name, spec in CATALOG.items()}


def get_spec(gpu_type: str) -> GPUSpec:
    """Look up a GPU type by name (case-insensitive).

    Raises:
        ConfigError: The type is not in the catalog; the message lists the known ones.
    """
    spec = find_spec(gpu_type)
    if spec is None:
        known = ", ".join(CATALOG)
        raise ConfigError(f"unknown GPU type {gpu_type!r} (known: {known})")
    return spec


def find_spec(gpu_type: str) -> GPUSpec | None:
    """The catalog spec of ``gpu_type`` (case-insensitive), else the spec registered for a
    type a GPU reported (:func:`register_reported_spec`), or None when it is unknown."""
    key = gpu_type.lower()
    return _BY_LOWER_NAME.get(key) or _REPORTED.get(key)


#: Specs of types the catalog does not know, built from what their GPUs reported.
_REPORTED: dict[str, GPUSpec] = {}


def register_reported_spec(spec: GPUSpec) -> None:
    """Make a type the catalog does not know (a spec from :func:`spec_from_reported`) known to
    :func:`get_spec` in this process, so the planner can use its prior. A catalog type is
    never replaced."""
    if spec.name.lower() not in _BY_LOWER_NAME:
        _REPORTED[spec.name.lower()] = spec


def catalog_type_for_nvml_name(product_name: str) -> str | None:
    """The catalog type of an NVML product name, or None when no entry matches.

    Example: ``"NVIDIA H100 80GB HBM3"`` -> ``"H100-SXM"``, ``"NVIDIA H200"`` ->
    ``"H200-SXM"``, ``"NVIDIA Future GPU"`` -> None.
    """
    for pattern, gpu_type in NVML_NAME_PATTERNS:
        if pattern.search(product_name):
            return gpu_type
    return None


# The prior of an unknown type is scaled from H100-SXM's figures per watt of maximum limit.
_REFERENCE = CATALOG["H100-SXM"]
#: Idle power as a fraction of the maximum limit (H100-SXM: 69 / 700 W).
IDLE_FRACTION_OF_MAX = 0.1
#: Idle power never above this fraction of the minimum limit.
IDLE_FRACTION_OF_MIN_CAP = 0.5
#: Static power never above this fraction of the minimum limit (the lowest clock must fit
#: under it; B200: 120 / 200 W).
STATIC_FRACTION_OF_MIN_CAP = 0.6
#: Clock range used when an unknown GPU reports no supported clocks, MHz.
FALLBACK_SM_CLOCKS_MHZ = (210, 1980)


def _clock_step_mhz(clocks: Sequence[int]) -> int:
    """The most common step between adjacent clocks (15 MHz when there is none)."""
    steps = Counter(b - a for a, b in pairwise(clocks) if b > a)
    return steps.most_common(1)[0][0] if steps else SM_CLOCK_STEP_MHZ


def _check_reported(name: str, min_w: float, max_w: float, default_w: float) -> None:
    if not 0 < min_w <= max_w:
        raise ValueError(f"{name}: reported power-limit range [{min_w:g}, {max_w:g}] W is empty")
    if not min_w <= default_w <= max_w:
        raise ValueError(
            f"{name}: reported default limit {default_w:g} W is outside [{min_w:g}, {max_w:g}] W"
        )


def _clock_range(sm_clocks_mhz: Sequence[int]) -> tuple[int, int, int]:
    clocks = sorted({int(c) for c in sm_clocks_mhz if c > 0})
    if not clocks:
        lo, hi = FALLBACK_SM_CLOCKS_MHZ
        return lo, hi, SM_CLOCK_STEP_MHZ
    step = _clock_step_mhz(clocks)
    lo, hi = clocks[0], clocks[-1]
    # The physical model walks clocks down from the top in whole steps.
    lo = hi - ((hi - lo) // step) * step
    return lo, hi, step


def spec_from_reported(
    name: str,
    min_power_limit_w: float,
    max_power_limit_w: float,
    default_power_limit_w: float,
    sm_clocks_mhz: Sequence[int],
    memory_mib: float,
) -> GPUSpec:
    """A prior for a GPU type the catalog does not know, scaled from what it reports.

    Limits and clocks are the reported ones; idle and static power, peak throughput and
    memory bandwidth scale with the maximum limit by H100-SXM's ratios (a rough prior the
    power model refines online, or ``greenllm profile --gpu N`` measures).

    Args:
        name: The NVML product name, e.g. ``"NVIDIA Future GPU"``.
        min_power_limit_w: Reported minimum power limit, watts.
        max_power_limit_w: Reported maximum power limit, watts.
        default_power_limit_w: Reported default limit, watts.
        sm_clocks_mhz: Reported supported SM clocks, MHz (any order; the ends are enough;
            empty when the GPU reports none).
        memory_mib: Reported memory size, MiB.

    Raises:
        ValueError: The reported range is empty or the default lies outside it.
    """
    _check_reported(name, min_power_limit_w, max_power_limit_w, default_power_limit_w)
    lo, hi, step = _clock_range(sm_clocks_mhz)
    per_w = max_power_limit_w / _REFERENCE.max_power_limit_w
    idle_w = min(
        IDLE_FRACTION_OF_MAX * max_power_limit_w, IDLE_FRACTION_OF_MIN_CAP * min_power_limit_w
    )
    static_w = STATIC_FRACTION_OF_MAX * max_power_limit_w
    static_w = max(idle_w, min(static_w, STATIC_FRACTION_OF_MIN_CAP * min_power_limit_w))
    return GPUSpec(
        name=name,
        max_power_limit_w=float(max_power_limit_w),
        min_power_limit_w=float(min_power_limit_w),
        idle_power_w=idle_w,
        max_sm_clock_mhz=hi,
        min_sm_clock_mhz=lo,
        peak_tflops=_REFERENCE.peak_tflops * per_w,
        memory_bandwidth_gbps=_REFERENCE.memory_bandwidth_gbps * per_w,
        memory_mib=int(memory_mib) if memory_mib > 0 else _REFERENCE.memory_mib,
        sm_clock_step_mhz=step,
        default_power_limit_w=float(default_power_limit_w),
        origin=ORIGIN_REPORTED,
        static_power_w=static_w,
    )


def spec_for_inventory(
    gpu_type: str,
    min_power_limit_w: float,
    max_power_limit_w: float,
    default_power_limit_w: float,
    sm_clocks_mhz: Sequence[int],
    memory_mib: float,
) -> GPUSpec:
    """The spec to plan a real GPU with: its reported limits and clocks, the catalog's prior.

    For a catalog type (``gpu_type`` as the agent reports it, e.g. ``"H200-SXM"``), the
    catalog entry with the limits, default, clocks and memory replaced by the reported ones;
    for an unknown type, :func:`spec_from_reported`.

    Args:
        gpu_type: The type the agent reports (catalog name, or the NVML product name).
        min_power_limit_w: Reported minimum power limit, watts.
        max_power_limit_w: Reported maximum power limit, watts.
        default_power_limit_w: Reported default limit, watts.
        sm_clocks_mhz: Reported supported SM clocks, MHz (``[min, max]`` is enough; empty
            keeps the catalog's clocks).
        memory_mib: Reported memory size, MiB (0 keeps the catalog's).

    Raises:
        ValueError: The reported range is empty or the default lies outside it.
    """
    spec = find_spec(gpu_type)
    if spec is None:
        return spec_from_reported(
            gpu_type,
            min_power_limit_w,
            max_power_limit_w,
            default_power_limit_w,
            sm_clocks_mhz,
            memory_mib,
        )
    _check_reported(gpu_type, min_power_limit_w, max_power_limit_w, default_power_limit_w)
    lo, hi, step = (
        _clock_range(sm_clocks_mhz)
        if any(c > 0 for c in sm_clocks_mhz)
        else (spec.min_sm_clock_mhz, spec.max_sm_clock_mhz, spec.sm_clock_step_mhz)
    )
    return replace(
        spec,
        max_power_limit_w=float(max_power_limit_w),
        min_power_limit_w=float(min_power_limit_w),
        default_power_limit_w=float(default_power_limit_w),
        max_sm_clock_mhz=hi,
        min_sm_clock_mhz=lo,
        sm_clock_step_mhz=step,
        memory_mib=int(memory_mib) if memory_mib > 0 else spec.memory_mib,
        origin=ORIGIN_CATALOG_REPORTED,
    )
