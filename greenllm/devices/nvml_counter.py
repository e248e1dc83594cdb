"""Energy of an NVML GPU: the total-energy counter rebased, or polled power integrated.

``nvmlDeviceGetTotalEnergyConsumption`` counts millijoules since the driver was loaded. A
driver reload or a GPU reset starts it again from zero, so a raw difference across that
moment is negative. :class:`EnergyCounter` rebases: the energy since the restart (the new
reading, when it is plausible for the time elapsed) is added to what was counted before, and
the total never decreases.

The counter itself updates every 20-100 ms (see ``shared/gpu-reference.md``): two readings
closer together than that may differ by 0 or by a whole update step. Measurement windows
flag that (:attr:`greenllm.energy.measurement.Measurement.short_window`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from greenllm.errors import DeviceError

logger = logging.getLogger(__name__)

MILLI = 1000.0
#: A rebased reading may stand for at most this multiple of max power x elapsed time.
PLAUSIBLE_POWER_MARGIN = 1.5
#: ... plus this much, joules (readings taken back to back).
PLAUSIBLE_SLACK_J = 1.0


class EnergyCounter:
    """Energy since the first reading, joules, from raw counter readings in millijoules.

    Args:
        first_mj: The first raw reading, mJ (energy is 0 there).
        first_s: When it was taken, seconds.
        max_power_w: The most the GPU can draw, watts; bounds how much a reading after a
            counter restart may count for.
        where: Which GPU, for the log.
    """

    def __init__(self, first_mj: int, first_s: float, max_power_w: float, where: str) -> None:
        self._last_mj = int(first_mj)
        self._last_s = first_s
        self._max_power_w = max_power_w
        self._where = where
        self._total_j = 0.0
        #: How many times the counter went backwards and was rebased.
        self.resets = 0

    @property
    def energy_j(self) -> float:
        """Energy counted so far, joules."""
        return self._total_j

    def update(self, raw_mj: int, now_s: float) -> float:
        """Account one raw reading and return the energy since the first one, joules.

        Args:
            raw_mj: The counter now, mJ.
            now_s: When it was read, seconds (same clock as ``first_s``).
        """
        raw_mj = int(raw_mj)
        delta_mj = raw_mj - self._last_mj
        if delta_mj >= 0:
            self._total_j += delta_mj / MILLI
        else:
            self.resets += 1
            elapsed_s = max(0.0, now_s - self._last_s)
            plausible_j = PLAUSIBLE_POWER_MARGIN * self._max_power_w * elapsed_s
            since_restart_j = raw_mj / MILLI
            if 0 <= since_restart_j <= plausible_j + PLAUSIBLE_SLACK_J:
                self._total_j += since_restart_j
                counted = f"counting the {since_restart_j:.3f} J since its restart"
            else:
                counted = "counting nothing for that interval"
            logger.warning(
                "%s: energy counter went back from %d to %d mJ (driver reload or GPU reset); "
                "rebased, %s",
                self._where,
                self._last_mj,
                raw_mj,
                counted,
            )
        self._last_mj, self._last_s = raw_mj, now_s
        return self._total_j


class PowerIntegrator:
    """Energy from polled board power (trapezoid rule), for GPUs without the counter.

    Args:
        read_power_w: Reads the board power, watts.
        clock: Returns the time, seconds.
        poll_interval_s: Period of a background polling thread, seconds; None starts no
            thread (the owner calls :meth:`poll` from its own loop).
        name: The thread's name.
    """

    def __init__(
        self,
        read_power_w: Callable[[], float],
        clock: Callable[[], float],
        poll_interval_s: float | None,
        name: str,
    ) -> None:
        self._read_power_w = read_power_w
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._integrated_j = 0.0
        self._last_s = clock()
        self._last_w = read_power_w()
        self._thread: threading.Thread | None = None
        if poll_interval_s is not None:
            self._thread = threading.Thread(
                target=self._loop, args=(poll_interval_s,), name=name, daemon=True
            )
            self._thread.start()

    def _loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.poll()
            except DeviceError as err:
                logger.warning("power poll failed: %s", err)

    def poll(self) -> float:
        """Read the power once, add the trapezoid since the last reading; energy so far, J."""
        with self._lock:
            power_w = self._read_power_w()
            now_s = self._clock()
            self._integrated_j += 0.5 * (power_w + self._last_w) * (now_s - self._last_s)
            self._last_s, self._last_w = now_s, power_w
            return self._integrated_j

    def stop(self) -> None:
        """Stop the polling thread, if any (the integral stays readable)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
