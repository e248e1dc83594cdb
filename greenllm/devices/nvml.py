"""Real NVIDIA GPUs through NVML (the ``pynvml`` module of nvidia-ml-py).

Units: NVML reports power and limits in milliwatts and energy in millijoules; this module
converts to watts and joules at the boundary.

Energy: on Volta and newer GPUs :meth:`NVMLGPU.energy_j` reads NVML's total-energy counter
(``nvmlDeviceGetTotalEnergyConsumption``) relative to its first reading, so it starts at 0
when the object is created and only grows. Where that counter is missing (older GPUs, or
NVML answers NOT_SUPPORTED) the object polls the board power every
``power_poll_interval_s`` on a background thread and integrates it with the trapezoid rule;
``energy_j()`` takes one more reading so the integral runs up to the moment of the call.

Restore on exit: the power limit and locked clocks are device-wide and outlive the process.
An :class:`NVMLGPU` remembers what it changed; :meth:`NVMLGPU.restore_defaults` puts the
default power limit back and resets the clocks, for what it changed only. The first change
also registers an ``atexit`` hook that does the same when the interpreter exits normally
(not on SIGKILL or a crash); ``restore_defaults`` unregisters it.

NVML sessions are reference-counted: ``nvmlInit`` runs when the first user (discovery or a
GPU object) needs it and ``nvmlShutdown`` when the last one lets go. A closed GPU with
changes still to undo keeps its reference until they are undone, so the exit hook works.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pynvml

from greenllm.devices.base import GPU, PowerLimitConstraints
from greenllm.devices.nvml_errors import nvml_errors, translate
from greenllm.errors import DeviceError, DeviceNotFoundError, OutOfRangeError

logger = logging.getLogger(__name__)

MILLI = 1000.0
BYTES_PER_MIB = 1024 * 1024
#: Default period of the power poller used where the energy counter is missing, seconds.
DEFAULT_POWER_POLL_INTERVAL_S = 0.1

#: NVML product names -> catalog type, first match wins (see ``catalog.CATALOG``).
_CATALOG_NAME_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), gpu_type)
    for pattern, gpu_type in (
        (r"\bH100\b.*\b(SXM\d?|HBM3)\b", "H100-SXM"),
        (r"\bA100\b.*\bSXM\d?\b", "A100-SXM4"),
        (r"\bA100\b.*\bPCIE\b", "A100-PCIe"),
        (r"\bV100\b.*\bSXM2\b", "V100-SXM2"),
        (r"\bL4\b", "L4"),
        (r"\bA40\b", "A40"),
    )
)

_session_lock = threading.Lock()
_session_users = 0


def _acquire_nvml() -> None:
    """Take one reference on the NVML session, initialising NVML for the first.

    Raises:
        DeviceNotFoundError: NVML cannot start (library or driver missing, or broken).
    """
    global _session_users
    with _session_lock:
        if _session_users == 0:
            try:
                with nvml_errors("initialise NVML"):
                    pynvml.nvmlInit()
            except DeviceError as err:
                raise DeviceNotFoundError(f"no usable NVIDIA GPU: {err}") from err.__cause__
        _session_users += 1


def _release_nvml() -> None:
    """Drop one reference on the NVML session, shutting NVML down after the last."""
    global _session_users
    with _session_lock:
        _session_users -= 1
        if _session_users == 0:
            try:
                with nvml_errors("shut down NVML"):
                    pynvml.nvmlShutdown()
            except DeviceError as err:
                logger.warning("%s", err)


@contextmanager
def _nvml_session() -> Iterator[None]:
    _acquire_nvml()
    try:
        yield
    finally:
        _release_nvml()


def catalog_type(product_name: str) -> str:
    """The catalog type of an NVML product name, or the name itself when none matches.

    Example: ``"NVIDIA H100 80GB HBM3"`` -> ``"H100-SXM"``; ``"NVIDIA H100 PCIe"`` stays.
    """
    for pattern, gpu_type in _CATALOG_NAME_PATTERNS:
        if pattern.search(product_name):
            return gpu_type
    return product_name


class NVMLGPU(GPU):
    """One NVIDIA GPU, read and controlled through NVML.

    Args:
        index: NVML index of the GPU on this node.
        power_poll_interval_s: Period of the background power poller used where the energy
            counter is missing, seconds. ``None`` starts no thread: the caller then calls
            :meth:`poll_power` from its own sampling loop.
        clock: Returns the current time, seconds; defaults to ``time.monotonic``.

    Raises:
        DeviceNotFoundError: NVML cannot start.
        DeviceError: The GPU cannot be opened.
    """

    def __init__(
        self,
        index: int,
        power_poll_interval_s: float | None = DEFAULT_POWER_POLL_INTERVAL_S,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.index = index
        self._clock = clock or time.monotonic
        self._where = f"GPU {index}"
        self._closed = False
        self._holds_session = False
        self._power_limit_changed = False
        self._clocks_locked = False
        self._exit_hook_registered = False
        self._constraints: PowerLimitConstraints | None = None
        self._supported_clocks_mhz: list[int] | None = None
        self._energy_lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._stop_polling = threading.Event()
        self._counter_origin_mj: int | None = None
        self._integrated_j = 0.0
        self._last_poll_s = 0.0
        self._last_power_w = 0.0
        _acquire_nvml()
        self._holds_session = True
        try:
            with nvml_errors("open the device", self._where):
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                self.product_name: str = pynvml.nvmlDeviceGetName(self._handle)
                self.uuid = pynvml.nvmlDeviceGetUUID(self._handle)
            self.gpu_type = catalog_type(self.product_name)
            self._where = f"GPU {index} ({self.gpu_type})"
            self._counter_origin_mj = self._first_energy_counter_mj()
            if self._counter_origin_mj is None:
                self._start_power_integration(power_poll_interval_s)
        except BaseException:
            self.close()
            raise

    # -- helpers --------------------------------------------------------------------------
    def _call(self, operation: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn(handle, *args)``, mapping NVML errors for ``operation``."""
        with nvml_errors(operation, self._where):
            return fn(self._handle, *args)

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
        return self._counter_origin_mj is not None

    def _start_power_integration(self, poll_interval_s: float | None) -> None:
        self._last_poll_s = self.now_s()
        self._last_power_w = self.power_w()
        if poll_interval_s is None:
            return
        self._poller = threading.Thread(
            target=self._poll_loop,
            args=(poll_interval_s,),
            name=f"greenllm-nvml-power-{self.index}",
            daemon=True,
        )
        self._poller.start()

    def _poll_loop(self, interval_s: float) -> None:
        while not self._stop_polling.wait(interval_s):
            try:
                self.poll_power()
            except DeviceError as err:
                logger.warning("power poll failed: %s", err)

    def poll_power(self) -> float:
        """Read the power once and add the trapezoid since the last reading to the energy.

        Where the GPU has the energy counter (see :attr:`uses_energy_counter`) there is
        nothing to integrate: this returns :meth:`energy_j`.

        Returns:
            The energy so far, joules.
        """
        if self._counter_origin_mj is not None:
            return self.energy_j()
        with self._energy_lock:
            power_w = self.power_w()
            now_s = self.now_s()
            self._integrated_j += 0.5 * (power_w + self._last_power_w) * (now_s - self._last_poll_s)
            self._last_poll_s, self._last_power_w = now_s, power_w
            return self._integrated_j

    def _note_change(self) -> None:
        if not self._exit_hook_registered:
            atexit.register(self._restore_at_exit)
            self._exit_hook_registered = True

    def _settle_changes(self) -> None:
        """Drop the exit hook (and a closed object's NVML reference) once nothing is changed."""
        if self._power_limit_changed or self._clocks_locked:
            return
        if self._exit_hook_registered:
            atexit.unregister(self._restore_at_exit)
            self._exit_hook_registered = False
        if self._closed and self._holds_session:
            self._holds_session = False
            _release_nvml()

    def _restore_at_exit(self) -> None:
        try:
            self.restore_defaults()
        except DeviceError as err:
            logger.error("could not restore %s at exit: %s", self._where, err)

    # -- readings -------------------------------------------------------------------------
    def now_s(self) -> float:
        return self._clock()

    def power_w(self) -> float:
        return self._call("read power", pynvml.nvmlDeviceGetPowerUsage) / MILLI

    def energy_j(self) -> float:
        """Energy since this object was created, joules (monotonic, starts at 0)."""
        if self._counter_origin_mj is None:
            return self.poll_power()
        counter_mj = self._call(
            "read the energy counter", pynvml.nvmlDeviceGetTotalEnergyConsumption
        )
        return (counter_mj - self._counter_origin_mj) / MILLI

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
        """Graphics clocks supported at the highest memory clock, ascending, MHz."""
        if self._supported_clocks_mhz is None:
            op = "list the supported clocks"
            memory_mhz = max(self._call(op, pynvml.nvmlDeviceGetSupportedMemoryClocks))
            clocks = self._call(op, pynvml.nvmlDeviceGetSupportedGraphicsClocks, memory_mhz)
            self._supported_clocks_mhz = sorted(int(c) for c in clocks)
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

    # -- settings -------------------------------------------------------------------------
    def set_power_limit_w(self, power_limit_w: float) -> None:
        c = self.power_limit_constraints()
        if not c.min_power_limit_w <= power_limit_w <= c.max_power_limit_w:
            raise OutOfRangeError(
                f"{self._where}: power limit {power_limit_w:g} W is outside "
                f"[{c.min_power_limit_w:g}, {c.max_power_limit_w:g}] W"
            )
        self._call(
            f"set the power limit to {power_limit_w:g} W",
            pynvml.nvmlDeviceSetPowerManagementLimit,
            round(power_limit_w * MILLI),
        )
        self._power_limit_changed = True
        self._note_change()

    def lock_sm_clocks_mhz(self, min_sm_clock_mhz: int, max_sm_clock_mhz: int) -> None:
        clocks = self.supported_sm_clocks_mhz()
        lo, hi = clocks[0], clocks[-1]
        if not lo <= min_sm_clock_mhz <= max_sm_clock_mhz <= hi:
            raise OutOfRangeError(
                f"{self._where}: SM clock range [{min_sm_clock_mhz}, {max_sm_clock_mhz}] MHz "
                f"is empty or outside the supported [{lo}, {hi}] MHz"
            )
        self._call(
            f"lock SM clocks to [{min_sm_clock_mhz}, {max_sm_clock_mhz}] MHz",
            pynvml.nvmlDeviceSetGpuLockedClocks,
            min_sm_clock_mhz,
            max_sm_clock_mhz,
        )
        self._clocks_locked = True
        self._note_change()

    def reset_sm_clocks(self) -> None:
        self._call("reset SM clocks", pynvml.nvmlDeviceResetGpuLockedClocks)
        self._clocks_locked = False
        self._settle_changes()

    def restore_defaults(self) -> None:
        """Put back the default power limit and free the clocks, for what this object changed.

        Both are attempted even if one fails; the exit hook is unregistered once nothing is
        left to undo.

        Raises:
            DeviceError: Restoring failed (the first failure is raised).
        """
        errors: list[DeviceError] = []
        if self._power_limit_changed:
            try:
                default_w = self.power_limit_constraints().default_power_limit_w
                self._call(
                    f"restore the default power limit {default_w:g} W",
                    pynvml.nvmlDeviceSetPowerManagementLimit,
                    round(default_w * MILLI),
                )
                self._power_limit_changed = False
            except DeviceError as err:
                errors.append(err)
        if self._clocks_locked:
            try:
                self.reset_sm_clocks()
            except DeviceError as err:
                errors.append(err)
        self._settle_changes()
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Stop the power poller and let go of NVML; settings stay (the exit hook undoes them)."""
        self._closed = True
        self._stop_polling.set()
        if self._poller is not None:
            self._poller.join()
            self._poller = None
        self._settle_changes()


def discover_nvml_gpus(
    power_poll_interval_s: float | None = DEFAULT_POWER_POLL_INTERVAL_S,
) -> list[NVMLGPU]:
    """Open every NVIDIA GPU of this machine.

    Args:
        power_poll_interval_s: Passed to each :class:`NVMLGPU`.

    Returns:
        The GPUs in NVML index order.

    Raises:
        DeviceNotFoundError: The NVML library or driver is missing, or there is no GPU.
    """
    with _nvml_session():
        with nvml_errors("count GPUs"):
            count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            raise DeviceNotFoundError("NVML found no NVIDIA GPU on this machine")
        gpus: list[NVMLGPU] = []
        try:
            for index in range(count):
                gpus.append(NVMLGPU(index, power_poll_interval_s=power_poll_interval_s))
        except BaseException:
            for gpu in gpus:
                gpu.close()
            raise
        return gpus
