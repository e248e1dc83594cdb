"""The physical model of a GPU under load, used by the simulated backend.

Board power, watts, at normalised SM clock ``x = f / f_max``::

    P(x) = max(I, S + mem_activity * MEM * TDP + sm_activity * D * x * v(x)^2)
    D    = (LOAD - MEM) * TDP - S                (SM power at full activity and x = 1)
    v(x) = max(V_FLOOR, x)                       (voltage, normalised to 1 at f_max)

``I`` and ``S`` are per-type figures from the catalog, which names their sources: ``I`` is
the idle power (what a GPU with nothing running draws), ``S`` the static power under load
(:attr:`GPUSpec.load_static_power_w`: what a working board draws whatever its SM clock:
leakage at load temperature, memory and I/O at working clocks). ``D`` is set so that an
uncapped compute-bound job draws ``LOAD`` = 0.86 of TDP on every type (A40 ResNet-50
averaged 259 W at 300 W). Dynamic power grows with clock and the square of voltage; below
the voltage floor only the clock falls, so there power is linear in the clock and ``S`` is
what no cap removes. Time per unit of work is ``c / x + (1 - c)`` times its uncapped
value, where ``c`` is the compute-bound fraction of the workload: close to 1 for training
and prefill, small for memory-bound decode.

A power limit works as in the firmware: the GPU runs at the highest supported clock whose
power fits under the limit (and under any locked clock range).

Energy per unit against the limit is U-shaped. Under a cap the SMs get what the limit
leaves after ``S``, so the closer ``S`` sits to the minimum limit the harder throughput
collapses there, and static power over the longer run costs more than the cap saves. On
types whose minimum limit is a third of TDP or less (H100, H200, A100-SXM4, A40, L40S),
the minimum limit gives 0.23-0.38x throughput at 1.02-1.25x the uncapped energy per unit
(B200, minimum 20% of TDP: 0.15x at 1.55x); narrow-range types (V100, L4, A100-PCIe,
H100-PCIe) cannot be capped that deep and stay below uncapped energy. The Zeus NSDI'23
40%-cap point (0.50x throughput at 0.88x energy) holds only for ``S`` within about
0.12-0.155 of TDP, so the per-type figures stay in that window. Every range of
``shared/gpu-reference.md`` is a unit test, as is the deep-cap collapse per type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from greenllm.devices.catalog import GPUSpec

WorkloadKind = Literal["train", "prefill", "decode"]
WORKLOAD_KINDS: tuple[WorkloadKind, ...] = ("train", "prefill", "decode")

#: Power an uncapped compute-bound job draws, fraction of TDP (static + memory + SM).
LOAD_FRAC = 0.86
#: Clock-independent memory power at full memory activity, fraction of TDP.
MEM_FRAC = 0.0143
#: SM power at full activity and maximum clock is never below this fraction of TDP (a
#: guard for a spec whose reported maximum limit is far under its catalog static power).
MIN_DYN_FRAC = 0.35
#: Normalised voltage floor: below this fraction of f_max the voltage stops falling.
V_FLOOR = 0.88
#: Compute-bound fraction of training and prefill step time.
COMPUTE_FRACTION_DENSE = 0.74
#: Compute-bound fraction of decode step time (memory-bound).
COMPUTE_FRACTION_DECODE = 0.05
#: Model FLOP utilisation reached by training and prefill at maximum clock.
MFU_TRAIN = 0.35
MFU_PREFILL = 0.5
#: Fraction of peak memory bandwidth decode reaches.
DECODE_BW_EFFICIENCY = 0.7
#: Per-sequence decode cost relative to reading the weights once (KV cache, sampling).
DECODE_PER_SEQ_COST = 1.0 / 6.0
#: Decode SM activity: base, and the part that saturates with batch size.
DECODE_SM_ACTIVITY_BASE = 0.12
DECODE_SM_ACTIVITY_BATCH = 0.25
DECODE_SM_ACTIVITY_HALF_BATCH = 16.0
#: Bytes per parameter (bf16 weights).
BYTES_PER_PARAM = 2


@dataclass(frozen=True)
class Workload:
    """What runs on a GPU, as the model sees it.

    Attributes:
        kind: ``"train"`` (units: samples), ``"prefill"`` or ``"decode"`` (units: tokens).
        batch: Sequences per step.
        model_params: Model size, parameters.
        seq_len: Tokens per training sample.
    """

    kind: WorkloadKind = "train"
    batch: int = 8
    model_params: float = 1.3e9
    seq_len: int = 2048

    def __post_init__(self) -> None:
        if self.kind not in WORKLOAD_KINDS:
            raise ValueError(f"workload kind must be one of {WORKLOAD_KINDS}, not {self.kind!r}")
        if self.batch < 1 or self.model_params <= 0 or self.seq_len < 1:
            raise ValueError("batch, model_params and seq_len must be positive")

    @property
    def unit(self) -> str:
        """The unit of work: ``"samples"`` for training, else ``"tokens"``."""
        return "samples" if self.kind == "train" else "tokens"

    @property
    def compute_fraction(self) -> float:
        """Share of step time that scales with 1 / SM clock."""
        return COMPUTE_FRACTION_DECODE if self.kind == "decode" else COMPUTE_FRACTION_DENSE

    @property
    def sm_activity(self) -> float:
        """How busy the SMs are, scaling dynamic power (1 for dense compute)."""
        if self.kind != "decode":
            return 1.0
        share = self.batch / (self.batch + DECODE_SM_ACTIVITY_HALF_BATCH)
        return DECODE_SM_ACTIVITY_BASE + DECODE_SM_ACTIVITY_BATCH * share

    @property
    def mem_activity(self) -> float:
        """How busy device memory is, scaling memory power."""
        return 1.0

    def memory_mib(self) -> float:
        """Device memory the workload holds (weights, plus optimizer state when training)."""
        weights = self.model_params * BYTES_PER_PARAM
        factor = 8.0 if self.kind == "train" else 1.3
        return weights * factor / 2**20


def voltage(x: float) -> float:
    """Normalised voltage at normalised clock ``x``."""
    return max(V_FLOOR, x)


def dynamic_power_w(spec: GPUSpec) -> float:
    """SM power at full activity and maximum clock, watts (``D`` in the module docstring)."""
    tdp_w = spec.tdp_w
    return max((LOAD_FRAC - MEM_FRAC) * tdp_w - spec.load_static_power_w, MIN_DYN_FRAC * tdp_w)


def power_w(spec: GPUSpec, workload: Workload | None, sm_clock_mhz: float) -> float:
    """Board power at a given SM clock, watts (idle power when ``workload`` is None)."""
    if workload is None:
        return spec.idle_power_w
    x = sm_clock_mhz / spec.max_sm_clock_mhz
    watts = (
        spec.load_static_power_w
        + workload.mem_activity * MEM_FRAC * spec.tdp_w
        + workload.sm_activity * dynamic_power_w(spec) * x * voltage(x) ** 2
    )
    return max(spec.idle_power_w, watts)


def busy_power_w(spec: GPUSpec, active_power_w: float, busy_fraction: float) -> float:
    """Mean board power of a GPU busy ``busy_fraction`` of the time, watts.

    Busy, it draws ``active_power_w`` (:func:`power_w` of its workload); the rest of the
    time it waits with nothing to run and draws its idle power ``I``:
    ``I + f * (active - I)``. ``f = 1`` gives ``active_power_w`` exactly.
    """
    f = min(1.0, max(0.0, busy_fraction))
    if f >= 1.0:
        return active_power_w
    return spec.idle_power_w + f * (active_power_w - spec.idle_power_w)


def peak_throughput(spec: GPUSpec, workload: Workload) -> float:
    """Work per second at maximum clock with no cap (samples/s or tokens/s)."""
    if workload.kind == "train":
        flops_per_sample = 6.0 * workload.model_params * workload.seq_len
        return spec.peak_tflops * 1e12 * MFU_TRAIN / flops_per_sample
    if workload.kind == "prefill":
        return spec.peak_tflops * 1e12 * MFU_PREFILL / (2.0 * workload.model_params)
    weights_s = (
        workload.model_params
        * BYTES_PER_PARAM
        / (spec.memory_bandwidth_gbps * 1e9 * DECODE_BW_EFFICIENCY)
    )
    step_s = weights_s * (1.0 + workload.batch * DECODE_PER_SEQ_COST)
    return workload.batch / step_s


def clock_slowdown(workload: Workload, x: float) -> float:
    """Throughput at normalised clock ``x`` relative to ``x = 1`` (in (0, 1])."""
    c = workload.compute_fraction
    return 1.0 / (c / x + (1.0 - c))


def throughput(spec: GPUSpec, workload: Workload | None, sm_clock_mhz: float) -> float:
    """Work per second at a given SM clock (0 when idle)."""
    if workload is None:
        return 0.0
    x = sm_clock_mhz / spec.max_sm_clock_mhz
    return peak_throughput(spec, workload) * clock_slowdown(workload, x)


def effective_clock_mhz(
    spec: GPUSpec,
    workload: Workload | None,
    power_limit_w: float,
    locked_max_sm_clock_mhz: float | None = None,
) -> int:
    """The SM clock the firmware settles at: highest step fitting the limit and the lock.

    Args:
        spec: The GPU type.
        workload: What runs (None: idle, the GPU parks at its minimum clock).
        power_limit_w: Power limit in force, watts.
        locked_max_sm_clock_mhz: Upper end of a locked clock range, MHz, if any.

    Returns:
        The clock, MHz; the minimum supported clock when even that exceeds the limit.
    """
    lo = spec.min_sm_clock_mhz
    if workload is None:
        return lo
    step = spec.sm_clock_step_mhz
    top = spec.max_sm_clock_mhz
    if locked_max_sm_clock_mhz is not None:
        top = min(top, int(locked_max_sm_clock_mhz))
        top = lo + ((top - lo) // step) * step
    if power_w(spec, workload, top) <= power_limit_w:
        return top
    # Power is monotone in the clock: binary search over the steps.
    n_lo, n_hi = 0, (top - lo) // step
    while n_lo < n_hi:
        mid = (n_lo + n_hi + 1) // 2
        if power_w(spec, workload, lo + mid * step) <= power_limit_w:
            n_lo = mid
        else:
            n_hi = mid - 1
    return lo + n_lo * step


@dataclass(frozen=True)
class OperatingPoint:
    """Where a workload settles under given settings.

    Attributes:
        sm_clock_mhz: SM clock, MHz.
        power_w: Board power, watts.
        throughput: Work per second (samples/s or tokens/s).
    """

    sm_clock_mhz: int
    power_w: float
    throughput: float

    @property
    def joules_per_unit(self) -> float:
        """Energy per unit of work, joules (inf when no work is done)."""
        return self.power_w / self.throughput if self.throughput > 0 else math.inf


def operating_point(
    spec: GPUSpec,
    workload: Workload | None,
    power_limit_w: float,
    locked_max_sm_clock_mhz: float | None = None,
) -> OperatingPoint:
    """Clock, power and throughput of ``workload`` under a limit and optional clock lock."""
    clock = effective_clock_mhz(spec, workload, power_limit_w, locked_max_sm_clock_mhz)
    return OperatingPoint(
        sm_clock_mhz=clock,
        power_w=power_w(spec, workload, clock),
        throughput=throughput(spec, workload, clock),
    )
