"""The grid signal in the controller: per-job gCO2e and energy cost booked interval by
interval, and the signal's value now (for status and ``budget.follow``).

Each control step, the energy a job's GPUs drew since the previous step (the increase of
its measured energy) is booked against the signal over that step's window: its gCO2e is
the energy times the time-weighted intensity over the window times the PUE, its cost the
energy times the PUE times the time-weighted price. A job's gCO2e is thus the integral of
its energy against the intensity of each interval of the signal, to within one control
period, not its energy times one average. The live controller and the simulator both book
here (one shell).

Signal time: with ``carbon.signal_replay`` the signal's first time is the controller's
first start (persisted as the ``signal_origin_s`` setting, on the controller's wall clock,
so a restart does not start the day again); otherwise the file's times are Unix times read
against the wall clock. A signal that runs out holds its last value: an event says so once,
and status says so while it lasts.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from greenllm.config import ClusterConfig
from greenllm.energy.carbon import J_PER_KWH, GridIntensity
from greenllm.errors import ConfigError
from scheduler.shell.ports import StoredEvent

if TYPE_CHECKING:
    from scheduler.shell.controller import ControllerShell
    from scheduler.shell.jobs import JobRecord

log = logging.getLogger(__name__)

#: Setting holding the wall-clock time the replayed signal's first time stands for, s.
ORIGIN_SETTING = "signal_origin_s"
#: Prefix of the settings that hold each job's books (``carbon.job.<id>``).
JOB_SETTING = "carbon.job."
#: Seconds between writes of the jobs' books.
WRITE_PERIOD_S = 5.0


@dataclass
class JobCarbon:
    """What one job's energy cost the grid so far.

    Attributes:
        co2e_g: Emissions of its energy, grams CO2e (PUE included).
        cost: Cost of its energy, in the signal's currency (PUE included; 0 without price).
        booked_j: Its energy booked so far, joules.
        booked_at_s: Wall-clock time of the last booking, Unix seconds (None: never).
    """

    co2e_g: float = 0.0
    cost: float = 0.0
    booked_j: float = 0.0
    booked_at_s: float | None = None


class GridBooks:
    """The signal and the per-job books of one controller.

    Args:
        shell: The controller (its config, clocks, persistence).
        signal: The grid signal (None: the config names none; the region's constant).
        settings: Settings restored from the store.
    """

    def __init__(
        self,
        shell: ControllerShell,
        signal: GridIntensity | None,
        settings: dict[str, float | str],
    ) -> None:
        carbon = shell.config.carbon
        self.shell = shell
        self.pue = carbon.pue
        self.signal = signal
        self.jobs: dict[str, JobCarbon] = {}
        self.ran_out_said = False
        self._written_at_s = -math.inf
        #: Jobs whose books changed since they were last written.
        self._dirty: set[str] = set()
        self.origin_s = 0.0
        if signal is not None and carbon.signal_replay:
            stored = settings.get(ORIGIN_SETTING)
            if isinstance(stored, (int, float)):
                self.origin_s = float(stored)
            else:
                self.origin_s = shell.wall_clock()
                shell.persist.setting(ORIGIN_SETTING, self.origin_s)
        for key, value in settings.items():
            if key.startswith(JOB_SETTING) and isinstance(value, str):
                try:
                    co2e_g, cost, booked_j = (float(x) for x in json.loads(value))
                except (ValueError, TypeError):
                    log.error("setting %s cannot be read back (%r): left out", key, value)
                    continue
                self.jobs[key[len(JOB_SETTING) :]] = JobCarbon(co2e_g, cost, booked_j)

    @classmethod
    def for_config(
        cls, shell: ControllerShell, config: ClusterConfig, settings: dict[str, float | str]
    ) -> GridBooks:
        """The books for ``config``'s ``carbon`` section: its signal file, else its
        ``intensity_file``, else its region's yearly intensity.

        Raises:
            ConfigError: The signal file cannot be read (one line naming it); a bad region or
            ``intensity_file`` is logged and leaves the books out (None signal).
        """
        carbon = config.carbon
        if carbon.signal_file is not None:
            return cls(shell, GridIntensity.from_file(carbon.signal_file), settings)
        try:
            if carbon.intensity_file is not None:
                return cls(shell, GridIntensity.from_csv(carbon.intensity_file), settings)
            return cls(shell, GridIntensity.for_region(carbon.region), settings)
        except ConfigError as exc:  # accounting only: the controller runs on without it
            log.error("carbon: no per-job gCO2e books: %s", exc)
            return cls(shell, None, settings)

    @property
    def is_series(self) -> bool:
        """Whether the intensity changes over time (a signal file)."""
        return self.signal is not None and not self.signal.is_constant

    def signal_time_s(self, wall_s: float) -> float:
        """The signal's time for a wall-clock time, seconds."""
        if self.signal is None or not self.shell.config.carbon.signal_replay:
            return wall_s
        return self.signal.times_unix_s[0] + (wall_s - self.origin_s)

    def _clamped(self, signal_s: float) -> float:
        """``signal_s``, or the signal's first time when it lies before (the first value
        is taken for times before the series)."""
        assert self.signal is not None
        return max(signal_s, self.signal.times_unix_s[0])

    def intensity_now(self) -> float | None:
        """Intensity in force now, gCO2e/kWh (None: no signal)."""
        if self.signal is None:
            return None
        return self.signal.at(self._clamped(self.signal_time_s(self.shell.wall_clock())))

    def price_now(self) -> float | None:
        """Price in force now, per kWh (None: the signal has none)."""
        if self.signal is None:
            return None
        return self.signal.price_at(self._clamped(self.signal_time_s(self.shell.wall_clock())))

    def interval_now(self) -> int:
        """Index of the signal's interval in force now (-1: no series)."""
        if not self.is_series:
            return -1
        assert self.signal is not None
        t = self._clamped(self.signal_time_s(self.shell.wall_clock()))
        return bisect.bisect_right(self.signal.times_unix_s, t) - 1

    def ran_out(self) -> bool:
        """Whether the series has run out now (its last value holds on)."""
        if not self.is_series:
            return False
        assert self.signal is not None
        return self.signal.ran_out(self.signal_time_s(self.shell.wall_clock()))

    def describe(self) -> str:
        """One line for status: the signal, its value now, and whether it ran out."""
        if not self.is_series:
            return ""
        assert self.signal is not None
        value = self.intensity_now()
        price = self.price_now()
        text = f"grid signal {self.signal.label}: {value:g} gCO2e/kWh"
        if price is not None:
            text += f", price {price:g}/kWh"
        if self.ran_out():
            end = datetime.fromtimestamp(self.signal.runs_out_at_unix_s, UTC).isoformat()
            text += f"; ran out at {end}, holding its last value"
        return text

    def of(self, job_id: str) -> JobCarbon:
        """A job's books (zero when nothing was booked)."""
        return self.jobs.get(job_id) or JobCarbon()

    def step(self) -> None:
        """Book each job's energy since the previous step; say once when the signal runs
        out; write the books now and then."""
        shell = self.shell
        wall_s = shell.wall_clock()
        for job in shell.jobs.jobs.values():
            self._book(job, wall_s)
        if len(self.jobs) > len(shell.jobs.jobs):
            for gone in self.jobs.keys() - shell.jobs.jobs.keys():
                del self.jobs[gone]
        if self.ran_out() and not self.ran_out_said:
            self.ran_out_said = True
            text = self.describe()
            log.warning("%s", text)
            shell.persist.event(StoredEvent(wall_s, None, "signal-ran-out", text))
        if wall_s - self._written_at_s >= WRITE_PERIOD_S:
            self._written_at_s = wall_s
            for job_id in sorted(self._dirty):
                books = self.jobs.get(job_id)
                if books is not None:
                    value = json.dumps([books.co2e_g, books.cost, books.booked_j])
                    shell.persist.setting(JOB_SETTING + job_id, value)
            self._dirty.clear()

    def _book(self, job: JobRecord, wall_s: float) -> None:
        energy_j = job.final[0] if job.final is not None else job.energy_peak_j
        books = self.jobs.get(job.job_id)
        if books is None:
            if energy_j <= 0:
                return
            books = self.jobs[job.job_id] = JobCarbon()
        added_j = energy_j - books.booked_j
        if added_j > 0:
            start_s = books.booked_at_s if books.booked_at_s is not None else job.submitted_at_s
            self._add(books, added_j, min(start_s, wall_s), wall_s)
            books.booked_j = energy_j
            self._dirty.add(job.job_id)
        books.booked_at_s = wall_s

    def _add(self, books: JobCarbon, energy_j: float, start_s: float, end_s: float) -> None:
        """Book ``energy_j`` drawn evenly over the wall-clock window ``[start_s, end_s]``."""
        kwh = energy_j / J_PER_KWH * self.pue
        if self.signal is None:
            return
        a = self._clamped(self.signal_time_s(start_s))
        b = max(a, self.signal_time_s(end_s))
        books.co2e_g += kwh * self.signal.average_g_per_kwh(a, b)
        price = self.signal.average_price_per_kwh(a, b)
        if price is not None:
            books.cost += kwh * price
