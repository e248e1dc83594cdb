"""The result of one measurement window: joules, seconds and watts per device."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Source labels, as they appear in every output.
SOURCE_NVML = "nvml-counter"
SOURCE_NVML_POLLED = "nvml-polled-power"
SOURCE_SIMULATED = "simulated"
SOURCE_RAPL = "rapl"
SOURCE_ESTIMATE = "estimate"

#: NVML's total-energy counter updates every 20-100 ms: a window shorter than this may read
#: 0 J or a whole update step for a GPU measured by its counter, seconds.
COUNTER_UPDATE_PERIOD_S = 0.1


@dataclass(frozen=True)
class DeviceEnergy:
    """One device's share of a window.

    Attributes:
        device: Label (``gpu0 H100-SXM``, ``cpu package-0``, ``cpu estimate``).
        kind: ``"gpu"`` or ``"cpu"``.
        source: ``"nvml-counter"``, ``"nvml-polled-power"``, ``"simulated"``, ``"rapl"``
            or ``"estimate"``.
        energy_j: Energy over the window, joules.
        duration_s: Length of the window, seconds.
        avg_power_w: ``energy_j / duration_s``, watts (None for an empty window).
        in_total: Whether the row counts towards :attr:`Measurement.total_energy_j`.
        uuid: The GPU's UUID (GPU rows only).
        short_window: True when the window is shorter than the GPU's energy counter
            updates (:data:`COUNTER_UPDATE_PERIOD_S`): ``energy_j`` may be 0 or a whole
            update step; measure longer windows, or several steps per window.
    """

    device: str
    kind: str
    source: str
    energy_j: float
    duration_s: float
    avg_power_w: float | None
    in_total: bool
    uuid: str | None = None
    short_window: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The row as a JSON-ready mapping."""
        return {
            "device": self.device,
            "kind": self.kind,
            "uuid": self.uuid,
            "source": self.source,
            "energy_j": self.energy_j,
            "duration_s": self.duration_s,
            "avg_power_w": self.avg_power_w,
            "in_total": self.in_total,
            "short_window": self.short_window,
        }


def _avg_w(energy_j: float, duration_s: float) -> float | None:
    return energy_j / duration_s if duration_s > 0 else None


@dataclass(frozen=True)
class Measurement:
    """Energy over one window.

    Attributes:
        name: The window's name.
        start_s: Window start on the meter's clock, seconds.
        end_s: Window end on the meter's clock, seconds.
        start_unix_s: Window start, wall clock (Unix seconds), for carbon time series.
        end_unix_s: Window end, wall clock (Unix seconds).
        gpu_energy_j: Joules per GPU, keyed by GPU UUID.
        gpu_sources: Source label per GPU UUID (``nvml-counter``, ``nvml-polled-power``
            or ``simulated``).
        gpu_labels: Human label per GPU UUID.
        cpu_energy_j: Joules per RAPL zone (``package-0``, ``package-0/dram``...), or None
            when RAPL is unreadable. Never zero-filled.
        cpu_zones_in_total: RAPL zones that count towards the total (packages and DRAM;
            ``core``/``uncore`` lie inside their package, ``psys`` covers everything).
        cpu_unavailable_reason: Why ``cpu_energy_j`` is None.
        cpu_estimate_j: Modelled CPU energy (see :mod:`greenllm.energy.cpu_estimate`), or
            None when the estimate was not requested. An ESTIMATE, not a measurement.
        cpu_time_s: Process-tree CPU seconds behind ``cpu_estimate_j``.
        watts_per_core: Per-core power the estimate used, watts.
        gpus_excluded: UUIDs of GPUs read but left out of :attr:`total_energy_j` (simulated
            GPUs, whose energy is a model's, unless the caller counts them).
    """

    name: str
    start_s: float
    end_s: float
    start_unix_s: float
    end_unix_s: float
    gpu_energy_j: dict[str, float] = field(default_factory=dict)
    gpu_sources: dict[str, str] = field(default_factory=dict)
    gpu_labels: dict[str, str] = field(default_factory=dict)
    cpu_energy_j: dict[str, float] | None = None
    cpu_zones_in_total: tuple[str, ...] = ()
    cpu_unavailable_reason: str | None = None
    cpu_estimate_j: float | None = None
    cpu_time_s: float | None = None
    watts_per_core: float | None = None
    gpus_excluded: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        """Length of the window on the meter's clock, seconds."""
        return self.end_s - self.start_s

    def gpu_window_short(self, uuid: str) -> bool:
        """True when GPU ``uuid`` is measured by NVML's counter and the window is shorter
        than its update period (:data:`COUNTER_UPDATE_PERIOD_S`)."""
        source = self.gpu_sources.get(uuid, SOURCE_NVML)
        return source == SOURCE_NVML and self.duration_s < COUNTER_UPDATE_PERIOD_S

    @property
    def short_window(self) -> bool:
        """True when some GPU's energy over this window may be 0 J or a whole counter step
        (see :meth:`gpu_window_short`): treat its energy and average power as approximate."""
        return any(self.gpu_window_short(uuid) for uuid in self.gpu_energy_j)

    @property
    def gpu_total_j(self) -> float:
        """Energy of the GPUs counted in the total (all but :attr:`gpus_excluded`), joules."""
        return sum(j for u, j in self.gpu_energy_j.items() if u not in self.gpus_excluded)

    @property
    def cpu_total_j(self) -> float | None:
        """RAPL energy of the packages and DRAM, joules; None when RAPL is unreadable."""
        if self.cpu_energy_j is None:
            return None
        return sum(self.cpu_energy_j[k] for k in self.cpu_zones_in_total)

    @property
    def total_includes(self) -> list[str]:
        """What :attr:`total_energy_j` adds up: ``gpu``, then ``rapl`` or ``estimate``.

        The CPU estimate counts only where RAPL is unreadable, so nothing is counted twice.
        ``gpu`` is left out when every GPU read is excluded from the total.
        """
        counted = [u for u in self.gpu_energy_j if u not in self.gpus_excluded]
        parts = ["gpu"] if counted or not self.gpu_energy_j else []
        if self.cpu_energy_j is not None:
            parts.append(SOURCE_RAPL)
        elif self.cpu_estimate_j is not None:
            parts.append(SOURCE_ESTIMATE)
        return parts

    @property
    def total_energy_j(self) -> float:
        """GPU energy plus RAPL CPU/DRAM energy (or, without RAPL, the CPU estimate), joules."""
        total = self.gpu_total_j
        cpu_j = self.cpu_total_j
        if cpu_j is not None:
            total += cpu_j
        elif self.cpu_estimate_j is not None:
            total += self.cpu_estimate_j
        return total

    @property
    def avg_power_w(self) -> float | None:
        """``total_energy_j / duration_s``, watts; None for an empty window."""
        return _avg_w(self.total_energy_j, self.duration_s)

    def devices(self) -> list[DeviceEnergy]:
        """One row per GPU, RAPL zone and (if requested) the CPU estimate."""
        d = self.duration_s
        rows = [
            DeviceEnergy(
                device=self.gpu_labels.get(uuid, uuid),
                kind="gpu",
                source=self.gpu_sources.get(uuid, SOURCE_NVML),
                energy_j=joules,
                duration_s=d,
                avg_power_w=_avg_w(joules, d),
                in_total=uuid not in self.gpus_excluded,
                uuid=uuid,
                short_window=self.gpu_window_short(uuid),
            )
            for uuid, joules in self.gpu_energy_j.items()
        ]
        for zone, joules in (self.cpu_energy_j or {}).items():
            rows.append(
                DeviceEnergy(
                    device=f"cpu {zone}",
                    kind="cpu",
                    source=SOURCE_RAPL,
                    energy_j=joules,
                    duration_s=d,
                    avg_power_w=_avg_w(joules, d),
                    in_total=zone in self.cpu_zones_in_total,
                )
            )
        if self.cpu_estimate_j is not None:
            rows.append(
                DeviceEnergy(
                    device="cpu estimate",
                    kind="cpu",
                    source=SOURCE_ESTIMATE,
                    energy_j=self.cpu_estimate_j,
                    duration_s=d,
                    avg_power_w=_avg_w(self.cpu_estimate_j, d),
                    in_total=self.cpu_energy_j is None,
                )
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The measurement as a JSON-ready mapping."""
        estimate = None
        if self.cpu_estimate_j is not None:
            estimate = {
                "source": SOURCE_ESTIMATE,
                "energy_j": self.cpu_estimate_j,
                "cpu_time_s": self.cpu_time_s,
                "watts_per_core": self.watts_per_core,
            }
        return {
            "name": self.name,
            "duration_s": self.duration_s,
            "start_unix_s": self.start_unix_s,
            "end_unix_s": self.end_unix_s,
            "gpu_energy_j": dict(self.gpu_energy_j),
            "gpus_excluded": list(self.gpus_excluded),
            "cpu_energy_j": None if self.cpu_energy_j is None else dict(self.cpu_energy_j),
            "cpu_unavailable_reason": self.cpu_unavailable_reason,
            "cpu_estimate_j": self.cpu_estimate_j,
            "cpu_estimate": estimate,
            "total_energy_j": self.total_energy_j,
            "total_includes": self.total_includes,
            "avg_power_w": self.avg_power_w,
            "short_window": self.short_window,
            "devices": [row.to_dict() for row in self.devices()],
        }
