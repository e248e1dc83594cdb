"""A simulated GPU driven by the physical model in :mod:`greenllm.devices.physics`.

The energy counter (and the work counter) are the exact integrals of power (and
throughput), piecewise constant between state changes. Time comes from a clock
callable: wall time by default, virtual time in the simulator.

A GPU running a workload may be busy for only part of the time (a live CPU shard that
cannot keep its pace, :mod:`greenllm.pacing`): :meth:`SimulatedGPU.set_busy_fraction` says
how much, and power, work and utilization follow (:func:`physics.busy_power_w`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

from greenllm.devices import physics
from greenllm.devices.base import GPU, PowerLimitConstraints
from greenllm.devices.catalog import GPUSpec, get_spec
from greenllm.errors import OutOfRangeError

AMBIENT_TEMPERATURE_C = 30.0
#: Temperature rise at TDP over ambient, degrees Celsius.
TEMPERATURE_RISE_AT_TDP_C = 45.0


class SimulatedGPU(GPU):
    """A GPU of a catalog type, following the calibrated physical model.

    Args:
        gpu_type: Catalog name (see :data:`greenllm.devices.catalog.CATALOG`), or a
            :class:`GPUSpec` (e.g. from :func:`greenllm.devices.catalog.spec_from_reported`
            for a type the catalog does not know).
        index: Index on its node.
        node: Node name, used in the UUID.
        clock: Returns the current time, seconds. Defaults to ``time.monotonic``.
        power_noise_w: Standard deviation of Gaussian noise on ``power_w()`` readings, watts.
        energy_update_period_s: The energy counter advances in steps of this period
            (as NVML's does every 20-100 ms); 0 for a continuous counter.
        seed: Seed of the noise generator.
    """

    def __init__(
        self,
        gpu_type: str | GPUSpec,
        index: int = 0,
        node: str = "local",
        clock: Callable[[], float] | None = None,
        power_noise_w: float = 0.0,
        energy_update_period_s: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.spec: GPUSpec = gpu_type if isinstance(gpu_type, GPUSpec) else get_spec(gpu_type)
        self.gpu_type = self.spec.name
        self.index = index
        self.uuid = f"sim-{node}-{index}"
        self._clock = clock or time.monotonic
        self._noise_w = power_noise_w
        self._energy_period_s = energy_update_period_s
        self._rng = random.Random(seed)
        self._power_limit_w = float(self.spec.boot_power_limit_w)
        self._limit_before_w: float | None = None
        self._locked: tuple[int, int] | None = None
        self._workload: physics.Workload | None = None
        self._last_s = self._clock()
        self._energy_j = 0.0
        self._reported_energy_j = 0.0
        self._work_units = 0.0
        self._point = physics.operating_point(self.spec, None, self._power_limit_w)
        self._busy_fraction = 1.0
        self._power_now_w = self._point.power_w
        self._start_s = self._last_s

    # -- time integration -------------------------------------------------------------
    def _advance(self) -> None:
        now = self._clock()
        dt = now - self._last_s
        if dt <= 0:
            return
        if self._energy_period_s > 0:
            # The counter as of its last update tick in (last, now], if one passed.
            ticks = math.floor((now - self._start_s) / self._energy_period_s + 1e-9)
            tick_s = self._start_s + ticks * self._energy_period_s
            if tick_s > self._last_s:
                self._reported_energy_j = self._energy_j + self._power_now_w * (
                    tick_s - self._last_s
                )
        self._energy_j += self._power_now_w * dt
        self._work_units += self._point.throughput * self._busy_fraction * dt
        self._last_s = now

    def _settle(self) -> None:
        self._advance()
        locked_max = self._locked[1] if self._locked else None
        self._point = physics.operating_point(
            self.spec, self._workload, self._power_limit_w, locked_max
        )
        self._power_now_w = physics.busy_power_w(
            self.spec, self._point.power_w, self._busy_fraction if self._workload else 1.0
        )

    # -- workload -----------------------------------------------------------------------
    def set_workload(self, workload: physics.Workload | None) -> None:
        """Start running ``workload`` now (None: go idle)."""
        self._advance()
        self._workload = workload
        self._settle()

    @property
    def workload(self) -> physics.Workload | None:
        """What runs on the GPU now, or None when idle."""
        return self._workload

    def throughput(self) -> float:
        """Work rate while busy, units per second (samples/s or tokens/s): what the
        workload does at the current limit and clocks, whatever the busy fraction."""
        return self._point.throughput

    def set_busy_fraction(self, busy_fraction: float) -> None:
        """Share of the time the workload keeps the GPU busy from now on, 0 to 1 (1 by
        default). The rest of the time the GPU waits (for a CPU that cannot keep up) at
        idle power: power is ``idle + f * (active - idle)``, work ``f * throughput``,
        utilization ``100 f``. No effect while idle (no workload).

        Raises:
            ValueError: ``busy_fraction`` is not a number in [0, 1].
        """
        f = float(busy_fraction)
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"busy fraction must be in [0, 1], not {busy_fraction!r}")
        if f == self._busy_fraction:
            return
        self._advance()
        self._busy_fraction = f
        self._settle()

    @property
    def busy_fraction(self) -> float:
        """Share of the time the workload keeps the GPU busy, 0 to 1."""
        return self._busy_fraction

    def work_units(self) -> float:
        """Exact integral of throughput since creation, units."""
        self._advance()
        return self._work_units

    # -- GPU interface ------------------------------------------------------------------
    def now_s(self) -> float:
        return self._clock()

    def power_w(self) -> float:
        noise = self._rng.gauss(0.0, self._noise_w) if self._noise_w > 0 else 0.0
        return max(0.0, self._power_now_w + noise)

    def energy_j(self) -> float:
        self._advance()
        return self._energy_j if self._energy_period_s <= 0 else self._reported_energy_j

    def power_limit_w(self) -> float:
        return self._power_limit_w

    def power_limit_constraints(self) -> PowerLimitConstraints:
        return PowerLimitConstraints(
            min_power_limit_w=self.spec.min_power_limit_w,
            max_power_limit_w=self.spec.max_power_limit_w,
            default_power_limit_w=self.spec.boot_power_limit_w,
        )

    def set_power_limit_w(self, power_limit_w: float) -> None:
        c = self.power_limit_constraints()
        if not c.min_power_limit_w <= power_limit_w <= c.max_power_limit_w:
            raise OutOfRangeError(
                f"{self.gpu_type} GPU {self.index}: power limit {power_limit_w:g} W is outside "
                f"[{c.min_power_limit_w:g}, {c.max_power_limit_w:g}] W"
            )
        self._advance()
        if self._limit_before_w is None:
            self._limit_before_w = self._power_limit_w
        self._power_limit_w = float(power_limit_w)
        self._settle()

    def sm_clock_mhz(self) -> float:
        return float(self._point.sm_clock_mhz)

    def supported_sm_clocks_mhz(self) -> list[int]:
        return self.spec.supported_sm_clocks_mhz()

    def lock_sm_clocks_mhz(self, min_sm_clock_mhz: int, max_sm_clock_mhz: int) -> None:
        lo, hi = self.spec.min_sm_clock_mhz, self.spec.max_sm_clock_mhz
        if not lo <= min_sm_clock_mhz <= max_sm_clock_mhz <= hi:
            raise OutOfRangeError(
                f"{self.gpu_type} GPU {self.index}: SM clock range "
                f"[{min_sm_clock_mhz}, {max_sm_clock_mhz}] MHz is empty or outside "
                f"[{lo}, {hi}] MHz"
            )
        self._advance()
        self._locked = (min_sm_clock_mhz, max_sm_clock_mhz)
        self._settle()

    def locked_sm_clocks_mhz(self) -> tuple[int, int] | None:
        """The locked SM clock range, MHz, or None when clocks are free."""
        return self._locked

    def reset_sm_clocks(self) -> None:
        self._advance()
        self._locked = None
        self._settle()

    def utilization_pct(self) -> float:
        return 100.0 * self._busy_fraction if self._workload is not None else 0.0

    def temperature_c(self) -> float:
        share = self._power_now_w / self.spec.tdp_w
        return AMBIENT_TEMPERATURE_C + TEMPERATURE_RISE_AT_TDP_C * share

    def memory_used_mib(self) -> float:
        if self._workload is None:
            return 0.0
        return min(float(self.spec.memory_mib), self._workload.memory_mib())

    def memory_total_mib(self) -> float:
        return float(self.spec.memory_mib)

    def restore_defaults(self) -> None:
        """Put back the limit in force before the first change, and free the clocks."""
        self._advance()
        if self._limit_before_w is not None:
            self._power_limit_w = self._limit_before_w
            self._limit_before_w = None
        self._locked = None
        self._settle()
