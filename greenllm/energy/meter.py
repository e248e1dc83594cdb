"""Measurement windows over GPUs (energy counters) and the CPU (RAPL, or an estimate).

    meter = EnergyMeter(gpus)
    with meter.window("step") as w:
        ...
    print(w.result.total_energy_j, w.result.avg_power_w)

Windows are named; any number may be open at once, nested or overlapping
(``begin_window("a")``, ``begin_window("b")``, ``end_window("a")``, ``end_window("b")``).
A window costs two reads of every counter, whatever its length.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from greenllm.devices.base import GPU
from greenllm.devices.simulated import SimulatedGPU
from greenllm.energy.cpu_estimate import DEFAULT_WATTS_PER_CORE, CpuTimeEstimator
from greenllm.energy.measurement import (
    SOURCE_NVML,
    SOURCE_NVML_POLLED,
    SOURCE_SIMULATED,
    Measurement,
)
from greenllm.energy.rapl import DEFAULT_POWERCAP_ROOT, RaplReader


@dataclass(frozen=True)
class _Snapshot:
    t_s: float
    unix_s: float
    gpu_j: dict[str, float]
    rapl_j: dict[str, float] | None
    cpu_time_s: float | None


class Window:
    """An open window of a context manager; :attr:`result` is set when the block exits.

    Attributes:
        name: The window's name.
        result: The measurement, None until the block has exited.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.result: Measurement | None = None


def gpu_source(gpu: GPU) -> str:
    """The source label of a GPU's energy.

    ``simulated`` (the model's exact integral), ``nvml-counter`` (NVML's total-energy
    counter) or ``nvml-polled-power`` (GPUs older than Volta: polled power, integrated).
    """
    if isinstance(gpu, SimulatedGPU):
        return SOURCE_SIMULATED
    if getattr(gpu, "uses_energy_counter", True) is False:
        return SOURCE_NVML_POLLED
    return SOURCE_NVML


class EnergyMeter:
    """Measures energy over named windows.

    Args:
        gpus: The GPUs to measure; each one's ``energy_j()`` counter is read at the start
            and end of a window.
        rapl: ``"auto"`` reads RAPL under ``/sys/class/powercap`` where it is readable;
            a path reads a powercap tree there; a :class:`RaplReader` is used as is; None
            turns RAPL off. Unreadable RAPL gives ``cpu_energy_j = None`` and a reason.
        cpu_estimate: True (or a :class:`CpuTimeEstimator`) adds the labelled CPU ESTIMATE
            (process-tree CPU time x ``watts_per_core``) to every measurement.
        clock: Returns the time in seconds for window durations; ``time.monotonic`` by
            default. Pass the GPUs' virtual clock in simulations.
        wall_clock: Returns Unix time in seconds, recorded for carbon time series;
            ``time.time`` by default.
        watts_per_core: Per-core power of the CPU estimate, watts.
        simulated_in_total: Whether simulated GPUs count towards a measurement's total
            (their energy is their model's draw, not a measurement of the host).
    """

    def __init__(
        self,
        gpus: Sequence[GPU] = (),
        rapl: str | Path | RaplReader | None = "auto",
        cpu_estimate: bool | CpuTimeEstimator = False,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] | None = None,
        watts_per_core: float = DEFAULT_WATTS_PER_CORE,
        simulated_in_total: bool = True,
    ) -> None:
        self.gpus = list(gpus)
        self.simulated_in_total = simulated_in_total
        uuids = [g.uuid for g in self.gpus]
        if len(set(uuids)) != len(uuids):
            raise ValueError(f"GPU UUIDs must be unique, got {uuids}")
        self._clock = clock or time.monotonic
        self._wall_clock = wall_clock or time.time
        self.rapl: RaplReader | None
        if rapl is None:
            self.rapl = None
        elif isinstance(rapl, RaplReader):
            self.rapl = rapl
        else:
            self.rapl = RaplReader(DEFAULT_POWERCAP_ROOT if rapl == "auto" else rapl)
        self.estimator: CpuTimeEstimator | None
        if isinstance(cpu_estimate, CpuTimeEstimator):
            self.estimator = cpu_estimate
        else:
            self.estimator = CpuTimeEstimator(watts_per_core) if cpu_estimate else None
        self._open: dict[str, _Snapshot] = {}
        self._lock = threading.Lock()

    @property
    def rapl_unavailable_reason(self) -> str | None:
        """Why CPU/DRAM energy is not measured, or None when RAPL is read."""
        if self.rapl is None:
            return "RAPL turned off"
        return self.rapl.unavailable_reason

    def open_windows(self) -> list[str]:
        """Names of the windows begun and not yet ended, in the order they began."""
        with self._lock:
            return list(self._open)

    def poll(self) -> None:
        """Read the RAPL counters so that wraparounds are caught during long windows.

        Call it at least every few minutes while a window is open (GPU counters need no
        polling).
        """
        with self._lock:
            if self.rapl is not None:
                self.rapl.read_j()

    def _snapshot(self) -> _Snapshot:
        return _Snapshot(
            t_s=self._clock(),
            unix_s=self._wall_clock(),
            gpu_j={g.uuid: g.energy_j() for g in self.gpus},
            rapl_j=self.rapl.read_j() if self.rapl is not None else None,
            cpu_time_s=self.estimator.cpu_time_s() if self.estimator is not None else None,
        )

    def begin_window(self, name: str) -> None:
        """Start the window ``name``.

        Raises:
            ValueError: A window of that name is already open.
        """
        with self._lock:
            if name in self._open:
                raise ValueError(f"energy window {name!r} is already open")
            self._open[name] = self._snapshot()

    def end_window(self, name: str) -> Measurement:
        """End the window ``name`` and return its measurement.

        Raises:
            ValueError: No window of that name is open.
        """
        with self._lock:
            if name not in self._open:
                raise ValueError(f"energy window {name!r} is not open")
            end = self._snapshot()
            begin = self._open.pop(name)
        return self._measurement(name, begin, end)

    @contextmanager
    def window(self, name: str) -> Iterator[Window]:
        """Measure the ``with`` block; the yielded :class:`Window` gets ``result`` on exit
        (also when the block raises)."""
        handle = Window(name)
        self.begin_window(name)
        try:
            yield handle
        finally:
            handle.result = self.end_window(name)

    def _measurement(self, name: str, begin: _Snapshot, end: _Snapshot) -> Measurement:
        cpu_j: dict[str, float] | None = None
        in_total: tuple[str, ...] = ()
        reason = self.rapl_unavailable_reason
        if begin.rapl_j is not None and end.rapl_j is not None and self.rapl is not None:
            cpu_j = {k: end.rapl_j[k] - begin.rapl_j[k] for k in end.rapl_j}
            in_total = tuple(z.key for z in self.rapl.zones if z.in_total)
            reason = None
        estimate_j = cpu_time_s = watts_per_core = None
        if self.estimator is not None and begin.cpu_time_s is not None:
            assert end.cpu_time_s is not None
            cpu_time_s = end.cpu_time_s - begin.cpu_time_s
            estimate_j = self.estimator.energy_j(cpu_time_s)
            watts_per_core = self.estimator.watts_per_core
        return Measurement(
            name=name,
            start_s=begin.t_s,
            end_s=end.t_s,
            start_unix_s=begin.unix_s,
            end_unix_s=end.unix_s,
            gpu_energy_j={u: end.gpu_j[u] - begin.gpu_j[u] for u in end.gpu_j},
            gpu_sources={g.uuid: gpu_source(g) for g in self.gpus},
            gpu_labels={g.uuid: f"gpu{g.index} {g.gpu_type}" for g in self.gpus},
            cpu_energy_j=cpu_j,
            cpu_zones_in_total=in_total,
            cpu_unavailable_reason=reason,
            cpu_estimate_j=estimate_j,
            cpu_time_s=cpu_time_s,
            watts_per_core=watts_per_core,
            gpus_excluded=tuple(
                g.uuid
                for g in self.gpus
                if not self.simulated_in_total and gpu_source(g) == SOURCE_SIMULATED
            ),
        )
