"""The abstract GPU: one interface, with units in every name.

Backends: :mod:`greenllm.devices.nvml` (a real NVIDIA GPU through NVML) and
:mod:`greenllm.devices.simulated` (a calibrated physical model). Code above the
device layer (the energy meter, the node agent, the profiler) talks only to
:class:`GPU`.
"""

from __future__ import annotations

import abc
import logging
import math
from dataclasses import dataclass

from greenllm.errors import DeviceError

logger = logging.getLogger(__name__)

#: A reading the GPU could not give (the field is NOT_SUPPORTED, or NVML failed this once).
#: Negative, so it travels in every ``double`` field of the wire format and no real reading
#: is ever mistaken for it: power, limits, clocks, utilization, memory are never negative,
#: and no GPU die reads -1 degrees Celsius while it runs.
UNAVAILABLE = -1.0


def is_available(value: float) -> bool:
    """True for a real reading; False for :data:`UNAVAILABLE` (any negative value) or NaN."""
    return not math.isnan(value) and value >= 0.0


@dataclass(frozen=True)
class PowerLimitConstraints:
    """The range a GPU's power limit may be set in.

    Attributes:
        min_power_limit_w: Lowest settable power limit, watts.
        max_power_limit_w: Highest settable power limit, watts.
        default_power_limit_w: The limit the GPU boots with, watts.
    """

    min_power_limit_w: float
    max_power_limit_w: float
    default_power_limit_w: float

    def clamp(self, power_limit_w: float) -> float:
        """Return ``power_limit_w`` clamped into ``[min, max]``, watts."""
        return min(self.max_power_limit_w, max(self.min_power_limit_w, power_limit_w))


@dataclass(frozen=True)
class GPUSample:
    """One telemetry reading of a GPU.

    A field the GPU could not give is :data:`UNAVAILABLE` (negative) and named in
    ``unavailable``; the energy counter is never unavailable: it holds its last good value.

    Attributes:
        timestamp_s: When it was read, seconds on the backend's clock.
        power_w: Instantaneous (or firmware-averaged) board power, watts.
        energy_j: Total-energy counter, joules since the backend started counting.
        power_limit_w: Power limit in force, watts.
        sm_clock_mhz: Current SM clock, MHz.
        utilization_pct: GPU utilization, percent (0-100).
        temperature_c: GPU temperature, degrees Celsius.
        memory_used_mib: Device memory in use, MiB.
        unavailable: Names of the fields that could not be read this time (``energy_j``
            among them when it is the last good value).
    """

    timestamp_s: float
    power_w: float
    energy_j: float
    power_limit_w: float
    sm_clock_mhz: float
    utilization_pct: float
    temperature_c: float
    memory_used_mib: float
    unavailable: tuple[str, ...] = ()


#: The fields :meth:`GPU.sample` reads, in order, besides the energy counter.
SAMPLE_FIELDS = (
    "power_w",
    "power_limit_w",
    "sm_clock_mhz",
    "utilization_pct",
    "temperature_c",
    "memory_used_mib",
)


class GPU(abc.ABC):
    """One GPU. Implementations must be safe to call from one thread at a time."""

    #: Index of the GPU on its node (0-based).
    index: int
    #: Catalog type name, e.g. ``"H100-SXM"``; for real GPUs the best catalog match or the
    #: NVML product name.
    gpu_type: str
    #: Stable identifier (NVML UUID, or ``sim-<node>-<index>``).
    uuid: str
    #: Last good energy reading, joules (what :meth:`sample` reports when the counter fails).
    _last_energy_j: float = 0.0
    #: Fields whose failure has been logged once already.
    _warned_fields: frozenset[str] = frozenset()

    @abc.abstractmethod
    def power_w(self) -> float:
        """Current board power draw, watts."""

    @abc.abstractmethod
    def energy_j(self) -> float:
        """Monotonic total-energy counter, joules."""

    @abc.abstractmethod
    def power_limit_w(self) -> float:
        """Power limit in force, watts."""

    @abc.abstractmethod
    def power_limit_constraints(self) -> PowerLimitConstraints:
        """The settable range and default of the power limit."""

    @abc.abstractmethod
    def set_power_limit_w(self, power_limit_w: float) -> None:
        """Set the power limit, watts.

        Raises:
            OutOfRangeError: ``power_limit_w`` lies outside :meth:`power_limit_constraints`.
            DevicePermissionError: The process may not change the limit.
        """

    @abc.abstractmethod
    def sm_clock_mhz(self) -> float:
        """Current SM clock, MHz."""

    @abc.abstractmethod
    def supported_sm_clocks_mhz(self) -> list[int]:
        """SM clocks this GPU can be locked to, ascending, MHz."""

    @abc.abstractmethod
    def lock_sm_clocks_mhz(self, min_sm_clock_mhz: int, max_sm_clock_mhz: int) -> None:
        """Lock the SM clock into ``[min_sm_clock_mhz, max_sm_clock_mhz]``.

        Raises:
            OutOfRangeError: The range is empty or outside the supported clocks.
            DevicePermissionError: The process may not lock clocks.
        """

    @abc.abstractmethod
    def reset_sm_clocks(self) -> None:
        """Undo :meth:`lock_sm_clocks_mhz`; the GPU picks its clocks freely again."""

    @abc.abstractmethod
    def utilization_pct(self) -> float:
        """GPU utilization, percent."""

    @abc.abstractmethod
    def temperature_c(self) -> float:
        """GPU temperature, degrees Celsius."""

    @abc.abstractmethod
    def memory_used_mib(self) -> float:
        """Device memory in use, MiB."""

    @abc.abstractmethod
    def memory_total_mib(self) -> float:
        """Device memory size, MiB."""

    @abc.abstractmethod
    def restore_defaults(self) -> None:
        """Put back the power limit and clocks in force before this object's first change.

        Only what this object (or, for NVML, a greenllm process before it that did not get to
        restore) changed is touched. Call it when stopping on purpose; it never runs by
        itself at exit or on a signal.
        """

    @property
    def last_energy_j(self) -> float:
        """The last energy reading :meth:`sample` got, joules (0 before the first)."""
        return self._last_energy_j

    def _note_unavailable(self, field: str, err: DeviceError) -> None:
        if field not in self._warned_fields:
            self._warned_fields = self._warned_fields | {field}
            logger.warning("%s unavailable (reported as %g): %s", field, UNAVAILABLE, err)

    def sample(self) -> GPUSample:
        """Read every telemetry field once; one field that fails never fails the others.

        A field that raises :class:`DeviceError` (NOT_SUPPORTED, or a transient NVML error)
        reads :data:`UNAVAILABLE` and is named in ``unavailable``; the energy counter keeps
        its last good value. The first failure of each field is logged.

        Returns:
            A :class:`GPUSample`; ``timestamp_s`` is on :meth:`now_s`'s clock.
        """
        unavailable: list[str] = []
        try:
            energy_j = self.energy_j()
            self._last_energy_j = energy_j
        except DeviceError as err:
            self._note_unavailable("energy_j", err)
            unavailable.append("energy_j")
            energy_j = self._last_energy_j
        values: dict[str, float] = {}
        for field in SAMPLE_FIELDS:
            try:
                values[field] = float(getattr(self, field)())
            except DeviceError as err:
                self._note_unavailable(field, err)
                unavailable.append(field)
                values[field] = UNAVAILABLE
        return GPUSample(
            timestamp_s=self.now_s(),
            power_w=values["power_w"],
            energy_j=energy_j,
            power_limit_w=values["power_limit_w"],
            sm_clock_mhz=values["sm_clock_mhz"],
            utilization_pct=values["utilization_pct"],
            temperature_c=values["temperature_c"],
            memory_used_mib=values["memory_used_mib"],
            unavailable=tuple(unavailable),
        )

    @abc.abstractmethod
    def now_s(self) -> float:
        """The backend's clock, seconds (monotonic wall time, or virtual time)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release backend resources. Does not restore settings."""
