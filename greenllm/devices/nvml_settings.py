"""Changing an NVML GPU's settings, and putting back what was in force before.

The mixin :class:`NVMLSettings` gives :class:`~greenllm.devices.nvml.NVMLGPU` its setters:
range-checked power limits and locked SM clocks, each first change recorded (see
:mod:`.nvml_restore`), and :meth:`NVMLSettings.restore_defaults`, which restores the limit
in force before greenllm's first change (not the default) and frees the clocks greenllm
locked. Nothing here runs by itself at exit or on a signal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pynvml

from greenllm.devices.base import PowerLimitConstraints
from greenllm.devices.nvml_restore import RestoreState
from greenllm.errors import DeviceError, DeviceNotSupportedError, OutOfRangeError

MILLI = 1000.0


class NVMLSettings:
    """Setters and restore for an NVML GPU (mixed into ``NVMLGPU``)."""

    _where: str
    _closed: bool
    _restore: RestoreState

    if TYPE_CHECKING:

        def _call(self, operation: str, fn: Callable[..., Any], *args: Any) -> Any: ...
        def power_limit_w(self) -> float: ...
        def power_limit_constraints(self) -> PowerLimitConstraints: ...
        def supported_sm_clocks_mhz(self) -> list[int]: ...

    def _requested_limit_w(self) -> float:
        """The limit requested now (``nvmlDeviceGetPowerManagementLimit``), watts."""
        op = "read the power limit"
        try:
            return float(self._call(op, pynvml.nvmlDeviceGetPowerManagementLimit)) / MILLI
        except DeviceNotSupportedError:
            return self.power_limit_w()

    @property
    def power_limit_before_w(self) -> float | None:
        """The limit in force before greenllm's first change, watts (None: not changed)."""
        return self._restore.limit_before_w

    def set_power_limit_w(self, power_limit_w: float) -> None:
        c = self.power_limit_constraints()
        if not c.min_power_limit_w <= power_limit_w <= c.max_power_limit_w:
            raise OutOfRangeError(
                f"{self._where}: power limit {power_limit_w:g} W is outside "
                f"[{c.min_power_limit_w:g}, {c.max_power_limit_w:g}] W"
            )
        self._restore.before_limit_change(self._requested_limit_w)
        try:
            self._call(
                f"set the power limit to {power_limit_w:g} W",
                pynvml.nvmlDeviceSetPowerManagementLimit,
                round(power_limit_w * MILLI),
            )
        except DeviceError:
            self._restore.limit_set(ok=False)
            raise
        self._restore.limit_set(ok=True)

    def lock_sm_clocks_mhz(self, min_sm_clock_mhz: int, max_sm_clock_mhz: int) -> None:
        clocks = self.supported_sm_clocks_mhz()
        if not clocks:
            raise DeviceNotSupportedError(
                f"{self._where}: lists no supported SM clocks, so they cannot be locked"
            )
        lo, hi = clocks[0], clocks[-1]
        if not lo <= min_sm_clock_mhz <= max_sm_clock_mhz <= hi:
            raise OutOfRangeError(
                f"{self._where}: SM clock range [{min_sm_clock_mhz}, {max_sm_clock_mhz}] MHz "
                f"is empty or outside the supported [{lo}, {hi}] MHz"
            )
        self._restore.before_clock_lock()
        try:
            self._call(
                f"lock SM clocks to [{min_sm_clock_mhz}, {max_sm_clock_mhz}] MHz",
                pynvml.nvmlDeviceSetGpuLockedClocks,
                min_sm_clock_mhz,
                max_sm_clock_mhz,
            )
        except DeviceError:
            self._restore.clocks_set(ok=False)
            raise
        self._restore.clocks_set(ok=True)

    def reset_sm_clocks(self) -> None:
        self._call("reset SM clocks", pynvml.nvmlDeviceResetGpuLockedClocks)
        self._restore.clocks_reset()

    def restore_defaults(self) -> None:
        """Put back the limit in force before greenllm's first change; free locked clocks.

        Only what greenllm changed is touched; both are attempted even if one fails. Call it
        only when stopping on purpose: it never runs by itself.

        Raises:
            DeviceError: Restoring failed (the first failure is raised), or the object is
                closed.
        """
        if self._closed:
            raise DeviceError(f"{self._where}: closed; restore its settings before closing it")
        errors: list[DeviceError] = []
        before_w = self._restore.limit_before_w
        if self._restore.limit_changed and before_w is not None:
            try:
                target_w = self.power_limit_constraints().clamp(before_w)
                self._call(
                    f"restore the power limit {target_w:g} W",
                    pynvml.nvmlDeviceSetPowerManagementLimit,
                    round(target_w * MILLI),
                )
                self._restore.limit_restored()
            except DeviceError as err:
                errors.append(err)
        if self._restore.clocks_locked:
            try:
                self.reset_sm_clocks()
            except DeviceError as err:
                errors.append(err)
        if errors:
            raise errors[0]
