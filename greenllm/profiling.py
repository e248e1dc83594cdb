"""Throughput and power of a workload across power limits or SM clocks.

Two ways to get a curve:
- :func:`profile_model`: from the calibrated physical model of a catalog GPU type
  (what the simulator and the allocator's priors use);
- :func:`profile_device`: by running a workload on a GPU at each setting, with a
  warm-up, then measuring energy with the GPU's counter and work with the runner.

Each row is relative to the same workload uncapped at maximum clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from greenllm.devices import physics
from greenllm.devices.base import GPU
from greenllm.devices.catalog import GPUSpec
from greenllm.errors import GreenllmError, OutOfRangeError

Knob = Literal["power_limit", "sm_clock"]


@dataclass(frozen=True)
class ProfileRow:
    """One setting of a profile.

    Attributes:
        power_limit_w: Power limit in force, watts.
        sm_clock_mhz: SM clock reached (or locked), MHz.
        power_w: Average board power, watts.
        throughput: Work per second (samples/s for train, tokens/s otherwise).
        relative_throughput: ``throughput`` over the uncapped, max-clock throughput.
        joules_per_unit: Energy per unit of work, joules.
        relative_energy: ``joules_per_unit`` over the uncapped, max-clock value.
    """

    power_limit_w: float
    sm_clock_mhz: float
    power_w: float
    throughput: float
    relative_throughput: float
    joules_per_unit: float
    relative_energy: float

    def to_dict(self) -> dict[str, Any]:
        """The row as a JSON-ready dict."""
        return asdict(self)


def parse_range(text: str, what: str) -> list[float]:
    """Parse ``START:STOP:STEP`` (inclusive of STOP when it lands on a step).

    Raises:
        GreenllmError: Malformed, non-positive step, or empty range.
    """
    parts = text.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise GreenllmError(f"{what}: expected START:STOP:STEP, got {text!r}") from None
    if step <= 0:
        raise GreenllmError(f"{what}: STEP must be positive, got {step:g}")
    if stop < start:
        start, stop = stop, start
    n = int((stop - start) / step + 1e-9)
    return [start + i * step for i in range(n + 1)]


def _row(point: physics.OperatingPoint, limit_w: float, base: physics.OperatingPoint) -> ProfileRow:
    return ProfileRow(
        power_limit_w=limit_w,
        sm_clock_mhz=float(point.sm_clock_mhz),
        power_w=point.power_w,
        throughput=point.throughput,
        relative_throughput=point.throughput / base.throughput,
        joules_per_unit=point.joules_per_unit,
        relative_energy=point.joules_per_unit / base.joules_per_unit,
    )


def check_settings(spec_min: float, spec_max: float, values: list[float], what: str) -> None:
    """Raise :class:`OutOfRangeError` naming the first value outside ``[spec_min, spec_max]``."""
    for v in values:
        if not spec_min <= v <= spec_max:
            raise OutOfRangeError(f"{what}: {v:g} is outside [{spec_min:g}, {spec_max:g}]")


def profile_model(
    spec: GPUSpec, workload: physics.Workload, knob: Knob, settings: list[float]
) -> list[ProfileRow]:
    """Profile ``workload`` on a catalog GPU type from the physical model.

    Args:
        spec: The GPU type.
        workload: What runs.
        knob: ``"power_limit"`` (settings in watts) or ``"sm_clock"`` (settings in MHz; the
            clock is locked at that value, the power limit stays at its maximum).
        settings: The values to visit.
    """
    base = physics.operating_point(spec, workload, spec.max_power_limit_w)
    rows = []
    for value in settings:
        if knob == "power_limit":
            point = physics.operating_point(spec, workload, value)
            rows.append(_row(point, value, base))
        else:
            point = physics.operating_point(spec, workload, spec.max_power_limit_w, value)
            rows.append(_row(point, float(spec.max_power_limit_w), base))
    return rows


#: Runs the workload for about the given seconds and returns the units of work done.
Runner = Callable[[float], float]


def _measure(gpu: GPU, runner: Runner, warmup_s: float, measure_s: float) -> tuple[float, float]:
    runner(warmup_s)
    e0, t0 = gpu.energy_j(), gpu.now_s()
    units = runner(measure_s)
    e1, t1 = gpu.energy_j(), gpu.now_s()
    elapsed = t1 - t0
    if elapsed <= 0 or units <= 0:
        raise GreenllmError("the workload did no measurable work; raise --measure-s")
    return (e1 - e0) / elapsed, units / elapsed


def profile_device(
    gpu: GPU,
    runner: Runner,
    knob: Knob,
    settings: list[float],
    warmup_s: float = 2.0,
    measure_s: float = 5.0,
    progress: Callable[[str], None] | None = None,
) -> list[ProfileRow]:
    """Profile by running ``runner`` on ``gpu`` at each setting; restores defaults after.

    The baseline (uncapped, clocks free) is measured first. Power is the energy-counter
    difference over the measurement, divided by its duration.
    """
    c = gpu.power_limit_constraints()
    clocks = gpu.supported_sm_clocks_mhz()
    if knob == "power_limit":
        check_settings(c.min_power_limit_w, c.max_power_limit_w, settings, "--power-limits (W)")
    elif clocks:
        check_settings(clocks[0], clocks[-1], settings, "--sm-clocks (MHz)")
    rows: list[ProfileRow] = []
    try:
        gpu.set_power_limit_w(c.max_power_limit_w)
        gpu.reset_sm_clocks()
        base_w, base_rate = _measure(gpu, runner, warmup_s, measure_s)
        for value in settings:
            if progress:
                unit = "W" if knob == "power_limit" else "MHz"
                progress(f"profiling at {value:g} {unit}")
            if knob == "power_limit":
                gpu.set_power_limit_w(value)
            else:
                gpu.lock_sm_clocks_mhz(int(value), int(value))
            power, rate = _measure(gpu, runner, warmup_s, measure_s)
            rows.append(
                ProfileRow(
                    power_limit_w=gpu.power_limit_w(),
                    sm_clock_mhz=gpu.sm_clock_mhz(),
                    power_w=power,
                    throughput=rate,
                    relative_throughput=rate / base_rate,
                    joules_per_unit=power / rate,
                    relative_energy=(power / rate) / (base_w / base_rate),
                )
            )
    finally:
        gpu.restore_defaults()
    return rows
