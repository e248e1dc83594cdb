"""Throughput and power of a workload across power limits or SM clocks.

Two ways to get a curve:
- :func:`profile_model`: from the calibrated physical model of a catalog GPU type
  (what the simulator and the allocator's priors use);
- :func:`profile_device`: by running a workload on a GPU at each setting, with a
  warm-up, then measuring energy with the GPU's counter and work with the runner; the SM
  clock is sampled on a side thread while the load runs (the median is reported), since a
  GPU's clock changes the moment its load stops.

Each row is relative to the same workload uncapped at maximum clock.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
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


#: Period of the SM-clock sampler during a measurement, seconds.
CLOCK_SAMPLE_INTERVAL_S = 0.05


class ClockSampler:
    """Reads a GPU's SM clock every ``interval_s`` on a side thread while a load runs.

    Use as a context manager around the load; :attr:`median_mhz` is the median reading, or
    None when the load ended before the first one.
    """

    def __init__(self, gpu: GPU, interval_s: float = CLOCK_SAMPLE_INTERVAL_S) -> None:
        self._gpu = gpu
        self._interval_s = interval_s
        self._stop = threading.Event()
        # A daemon: a signal turned into SystemExit between start() and the ``with`` body
        # skips __exit__, and a non-daemon reader would then keep the process alive.
        self._thread = threading.Thread(
            target=self._run, name="greenllm-clock-sampler", daemon=True
        )
        self.readings_mhz: list[float] = []

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            # One failed read loses one sample, not the profile.
            with contextlib.suppress(GreenllmError):
                self.readings_mhz.append(self._gpu.sm_clock_mhz())

    def __enter__(self) -> ClockSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def median_mhz(self) -> float | None:
        """Median SM clock over the load, MHz (None without readings)."""
        return statistics.median(self.readings_mhz) if self.readings_mhz else None


@dataclass(frozen=True)
class _Measured:
    power_w: float
    rate_per_s: float
    sm_clock_mhz: float


def _measure(gpu: GPU, runner: Runner, warmup_s: float, measure_s: float) -> _Measured:
    runner(warmup_s)
    e0, t0 = gpu.energy_j(), gpu.now_s()
    with ClockSampler(gpu) as clocks:
        units = runner(measure_s)
    e1, t1 = gpu.energy_j(), gpu.now_s()
    elapsed = t1 - t0
    if elapsed <= 0 or units <= 0:
        raise GreenllmError("the workload did no measurable work; raise --measure-s")
    clock_mhz = clocks.median_mhz
    if clock_mhz is None:  # a load shorter than one sampling period
        clock_mhz = gpu.sm_clock_mhz()
    return _Measured((e1 - e0) / elapsed, units / elapsed, clock_mhz)


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
    difference over the measurement, divided by its duration; the SM clock is the median of
    readings taken while the load runs. The settings in force before are restored at the
    end, also when the profile is interrupted (an exception, or SIGTERM turned into one).
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
        base = _measure(gpu, runner, warmup_s, measure_s)
        for value in settings:
            if progress:
                unit = "W" if knob == "power_limit" else "MHz"
                progress(f"profiling at {value:g} {unit}")
            if knob == "power_limit":
                gpu.set_power_limit_w(value)
            else:
                gpu.lock_sm_clocks_mhz(int(value), int(value))
            m = _measure(gpu, runner, warmup_s, measure_s)
            rows.append(
                ProfileRow(
                    power_limit_w=gpu.power_limit_w(),
                    sm_clock_mhz=m.sm_clock_mhz,
                    power_w=m.power_w,
                    throughput=m.rate_per_s,
                    relative_throughput=m.rate_per_s / base.rate_per_s,
                    joules_per_unit=m.power_w / m.rate_per_s,
                    relative_energy=(m.power_w / m.rate_per_s) / (base.power_w / base.rate_per_s),
                )
            )
    finally:
        gpu.restore_defaults()
    return rows
