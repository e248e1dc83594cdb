"""Real NVIDIA GPUs through NVML (the ``pynvml`` module of nvidia-ml-py).

Units: NVML reports power and limits in milliwatts and energy in millijoules; this module
converts to watts and joules at the boundary.

Numbering: :attr:`NVMLGPU.index` is the GPU's place on its node as greenllm numbers it
(dense, in NVML order, skipping GPUs that could not be opened); :attr:`NVMLGPU.nvml_index`
is NVML's own index. Neither is CUDA's device number (CUDA orders by speed unless
``CUDA_DEVICE_ORDER=PCI_BUS_ID``, and honours ``CUDA_VISIBLE_DEVICES``; NVML does neither):
a process is pointed at a GPU by :attr:`NVMLGPU.uuid` (see :mod:`greenllm.devices.cuda`).

Power: :meth:`NVMLGPU.power_w` is the instant reading where the driver has it and the
firmware's (on newer GPUs one-second) average otherwise (see :mod:`.nvml_power`).

Energy: on Volta and newer GPUs :meth:`NVMLGPU.energy_j` reads NVML's total-energy counter
relative to its first reading, rebased when it goes backwards (see :mod:`.nvml_counter`).
Where the counter is missing the object polls the board power every
``power_poll_interval_s`` on a background thread and integrates it (trapezoid rule).

Restore: the power limit and locked clocks are device-wide and outlive the process. The
first change records the limit in force before it (on disk too, given ``restore_dir``, see
:mod:`.nvml_restore`); :meth:`NVMLGPU.restore_defaults` puts that limit back and resets the
clocks greenllm locked. It runs only when called, when greenllm is stopped on purpose:
never at interpreter exit or on a signal, since a process killed (Ray turns SIGTERM into
SystemExit) while its controller still counts the GPU at its capped limit must leave the cap
in place.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pynvml

from greenllm.devices.base import GPU, PowerLimitConstraints
from greenllm.devices.catalog import catalog_type_for_nvml_name
from greenllm.devices.nvml_counter import EnergyCounter, PowerIntegrator
from greenllm.devices.nvml_errors import nvml_errors, translate
from greenllm.devices.nvml_power import FI_DEV_POWER_INSTANT, is_field_missing, read_field
from greenllm.devices.nvml_restore import RestoreState
from greenllm.devices.nvml_session import acquire_nvml, release_nvml
from greenllm.devices.nvml_settings import NVMLSettings
from greenllm.errors import DeviceError, DeviceNotSupportedError

logger = logging.getLogger(__name__)

MILLI = 1000.0
BYTES_PER_MIB = 1024 * 1024
#: Default period of the power poller used where the energy counter is missing, seconds.
DEFAULT_POWER_POLL_INTERVAL_S = 0.1


#: Power bound for rebasing the energy counter of a GPU that reports no limits, watts.
FALLBACK_MAX_POWER_W = 2000.0


def _text(value: str | bytes) -> str:
    """NVML strings (bytes from nvidia-ml-py releases before 11.5)."""
    return value.decode() if isinstance(value, bytes) else value


def catalog_type(product_name: str) -> str:
    """The catalog type of an NVML product name, or the name itself when none matches.

    Example: ``"NVIDIA H100 80GB HBM3"`` -> ``"H100-SXM"``; ``"NVIDIA Future GPU"`` stays.
    """
    return catalog_type_for_nvml_name(product_name) or product_name


class NVMLGPU(NVMLSettings, GPU):
    """One NVIDIA GPU, read and controlled through NVML.

    Args:
        nvml_index: NVML's index of the GPU.
        power_poll_interval_s: Period of the background power poller used where the energy
            counter is missing, seconds. ``None`` starts no thread: the caller then calls
            :meth:`poll_power` from its own sampling loop.
        clock: Returns the current time, seconds; defaults to ``time.monotonic``.
        index: The GPU's index on its node (default: ``nvml_index``).
        restore_dir: Where to keep the settings to restore (see :mod:`.nvml_restore`);
            None keeps them in memory only.

    Raises:
        DeviceNotFoundError: NVML cannot start.
        DeviceError: The GPU cannot be opened.
    """

    def __init__(
        self,
        nvml_index: int,
        power_poll_interval_s: float | None = DEFAULT_POWER_POLL_INTERVAL_S,
        clock: Callable[[], float] | None = None,
        index: int | None = None,
        restore_dir: Path | None = None,
    ) -> None:
        self.nvml_index = nvml_index
        self.index = nvml_index if index is None else index
        self._clock = clock or time.monotonic
        self._where = f"GPU {self.index}"
        self._closed = False
        self._holds_session = False
        self._constraints: PowerLimitConstraints | None = None
        self._supported_clocks_mhz: list[int] | None = None
        self._instant_power = True
        self._energy_lock = threading.Lock()
        self._counter: EnergyCounter | None = None
        self._integrator: PowerIntegrator | None = None
        acquire_nvml()
        self._holds_session = True
        try:
            with nvml_errors("open the device", self._where):
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index)
                self.product_name: str = _text(pynvml.nvmlDeviceGetName(self._handle))
                self.uuid = _text(pynvml.nvmlDeviceGetUUID(self._handle))
            self.gpu_type = catalog_type(self.product_name)
            self._where = f"GPU {self.index} ({self.gpu_type})"
            self._restore = RestoreState(self.uuid, restore_dir, self._where)
            self._start_energy(power_poll_interval_s)
        except BaseException:
            self.close()
            raise

    # -- helpers --------------------------------------------------------------------------
    def _call(self, operation: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn(handle, *args)``, mapping NVML errors for ``operation``."""
        with nvml_errors(operation, self._where):
            return fn(self._handle, *args)

    def _start_energy(self, poll_interval_s: float | None) -> None:
        first_mj = self._first_energy_counter_mj()
        if first_mj is not None:
            try:
                max_w = self.power_limit_constraints().max_power_limit_w
            except DeviceError:  # no power management here: bound rebases generously
                max_w = FALLBACK_MAX_POWER_W
            self._counter = EnergyCounter(first_mj, self.now_s(), max_w, self._where)
        else:
            name = f"greenllm-nvml-power-{self.index}"
            self._integrator = PowerIntegrator(self.power_w, self.now_s, poll_interval_s, name)

    def _first_energy_counter_mj(self) -> int | None:
        """The energy counter's first reading, mJ, or None where the GPU lacks the counter."""
        try:
            if pynvml.nvmlDeviceGetArchitecture(self._handle) < pynvml.NVML_DEVICE_ARCH_VOLTA:
                return None
        except pynvml.NVMLError:
            pass  # architecture unknown to this driver: try the counter itself
        try:
            return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound):
            return None
        except pynvml.NVMLError as err:
            raise translate(err, "read the energy counter", self._where) from err

    @property
    def uses_energy_counter(self) -> bool:
        """True when energy comes from NVML's counter, False when from polled power."""
        return self._counter is not None

    @property
    def energy_counter_resets(self) -> int:
        """How many times the energy counter went backwards and was rebased."""
        return 0 if self._counter is None else self._counter.resets

    def poll_power(self) -> float:
        """Read the power once and add the trapezoid since the last reading to the energy.

        Where the GPU has the energy counter (see :attr:`uses_energy_counter`) there is
        nothing to integrate: this returns :meth:`energy_j`.

        Returns:
            The energy so far, joules.
        """
        if self._integrator is None:
            return self.energy_j()
        return self._integrator.poll()

    # -- readings -------------------------------------------------------------------------
    def now_s(self) -> float:
        return self._clock()

    def power_w(self) -> float:
        """Board power, watts: the instant reading where the driver has it, else the average."""
        instant_w = self.instant_power_w()
        return self.average_power_w() if instant_w is None else instant_w

    @property
    def power_source(self) -> str:
        """``"instant"`` while the instant power field works here, else ``"average"``."""
        return "instant" if self._instant_power else "average"

    def instant_power_w(self) -> float | None:
        """The instant power field, watts; None where the driver lacks it or it failed now."""
        if not self._instant_power:
            return None
        try:
            return read_field(self._handle, FI_DEV_POWER_INSTANT) / MILLI
        except pynvml.NVMLError as err:
            if is_field_missing(err):
                self._instant_power = False
                logger.info("%s: no instant power field (%s); using the average", self._where, err)
            return None

    def average_power_w(self) -> float:
        """``nvmlDeviceGetPowerUsage``, watts (a one-second average on Ampere and newer)."""
        return self._call("read power", pynvml.nvmlDeviceGetPowerUsage) / MILLI

    def energy_j(self) -> float:
        """Energy since this object was created, joules (never decreases, starts at 0)."""
        if self._counter is None:
            return self.poll_power()
        with self._energy_lock:
            raw_mj = self._call(
                "read the energy counter", pynvml.nvmlDeviceGetTotalEnergyConsumption
            )
            return self._counter.update(raw_mj, self.now_s())

    def power_limit_w(self) -> float:
        return self._call("read the power limit", pynvml.nvmlDeviceGetEnforcedPowerLimit) / MILLI

    def power_limit_constraints(self) -> PowerLimitConstraints:
        if self._constraints is None:
            op = "read the power limit constraints"
            min_mw, max_mw = self._call(op, pynvml.nvmlDeviceGetPowerManagementLimitConstraints)
            default_mw = self._call(op, pynvml.nvmlDeviceGetPowerManagementDefaultLimit)
            self._constraints = PowerLimitConstraints(
                min_power_limit_w=min_mw / MILLI,
                max_power_limit_w=max_mw / MILLI,
                default_power_limit_w=default_mw / MILLI,
            )
        return self._constraints

    def sm_clock_mhz(self) -> float:
        return float(
            self._call("read the SM clock", pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM)
        )

    def supported_sm_clocks_mhz(self) -> list[int]:
        """Graphics clocks supported at the highest memory clock, ascending, MHz.

        Empty where the GPU lists none (NOT_SUPPORTED, e.g. under MIG or vGPU, or an empty
        list): its clocks cannot be locked then.
        """
        if self._supported_clocks_mhz is None:
            op = "list the supported clocks"
            clocks: list[int] = []
            try:
                memory_mhz = self._call(op, pynvml.nvmlDeviceGetSupportedMemoryClocks)
                for mem_mhz in sorted(memory_mhz, reverse=True):
                    listed = self._call(op, pynvml.nvmlDeviceGetSupportedGraphicsClocks, mem_mhz)
                    if listed:
                        clocks = sorted(int(c) for c in listed)
                        break
            except DeviceNotSupportedError as err:
                logger.warning("%s", err)
            if not clocks:
                logger.warning(
                    "%s lists no supported SM clocks; they cannot be locked", self._where
                )
            self._supported_clocks_mhz = clocks
        return list(self._supported_clocks_mhz)

    def utilization_pct(self) -> float:
        rates = self._call("read utilization", pynvml.nvmlDeviceGetUtilizationRates)
        return float(rates.gpu)

    def temperature_c(self) -> float:
        return float(
            self._call(
                "read the temperature", pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU
            )
        )

    def memory_used_mib(self) -> float:
        return self._call("read memory", pynvml.nvmlDeviceGetMemoryInfo).used / BYTES_PER_MIB

    def memory_total_mib(self) -> float:
        return self._call("read memory", pynvml.nvmlDeviceGetMemoryInfo).total / BYTES_PER_MIB

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Stop the power poller and let go of NVML; settings stay as they are."""
        self._closed = True
        if self._integrator is not None:
            self._integrator.stop()
        if self._holds_session:
            self._holds_session = False
            release_nvml()


def discover_nvml_gpus(
    power_poll_interval_s: float | None = DEFAULT_POWER_POLL_INTERVAL_S,
    restore_dir: Path | None = None,
) -> list[NVMLGPU]:
    """The GPUs of this machine that could be opened (see :func:`.nvml_discovery.discover_nvml`).

    Raises:
        DeviceNotFoundError: No NVML, no GPU, or no GPU that could be opened.
    """
    from greenllm.devices.nvml_discovery import discover_nvml

    return discover_nvml(power_poll_interval_s, restore_dir).gpus
