"""Per-job energy accounting: joules, units of work, J/unit and gCO2e per job.

    ledger = EnergyLedger(GridIntensity.for_region("fr"), pue=1.2)
    ledger.record_measurement("job-1", measurement, work_units=4096, unit="tokens")
    ledger.job("job-1").joules_per_unit

Each record's carbon is computed when it is recorded, over its own time window, so a
time-series grid intensity charges every interval at the intensity in force then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from greenllm.energy.carbon import GridIntensity, carbon_g, check_pue
from greenllm.energy.measurement import Measurement


@dataclass
class JobAccount:
    """What one job has used so far.

    Attributes:
        job: Job identifier.
        unit: What a unit of work is (``tokens``, ``samples``...).
        energy_j: Energy, joules.
        work_units: Units of work done.
        duration_s: Time accounted, seconds (sum of the recorded windows).
        carbon_g: Emissions, grams CO2e (PUE included).
    """

    job: str
    unit: str
    energy_j: float = 0.0
    work_units: float = 0.0
    duration_s: float = 0.0
    carbon_g: float = 0.0

    @property
    def joules_per_unit(self) -> float | None:
        """Energy per unit of work, joules; None before any work is recorded."""
        return self.energy_j / self.work_units if self.work_units > 0 else None

    @property
    def carbon_g_per_unit(self) -> float | None:
        """Emissions per unit of work, grams CO2e; None before any work is recorded."""
        return self.carbon_g / self.work_units if self.work_units > 0 else None

    @property
    def avg_power_w(self) -> float | None:
        """Average power over the accounted time, watts; None before any time is recorded."""
        return self.energy_j / self.duration_s if self.duration_s > 0 else None

    def to_dict(self) -> dict[str, Any]:
        """The account as a JSON-ready mapping."""
        return {
            "job": self.job,
            "unit": self.unit,
            "energy_j": self.energy_j,
            "work_units": self.work_units,
            "duration_s": self.duration_s,
            "joules_per_unit": self.joules_per_unit,
            "carbon_g": self.carbon_g,
            "carbon_g_per_unit": self.carbon_g_per_unit,
            "avg_power_w": self.avg_power_w,
        }


class EnergyLedger:
    """Accumulates energy, work and carbon per job.

    Args:
        intensity: Grid intensity, gCO2e/kWh or a :class:`GridIntensity`; the ``world``
            region by default.
        pue: Power usage effectiveness of the facility (>= 1).
    """

    def __init__(self, intensity: GridIntensity | float | None = None, pue: float = 1.0) -> None:
        self.intensity: GridIntensity | float = (
            intensity if intensity is not None else GridIntensity.for_region()
        )
        self.pue = check_pue(pue)
        self._jobs: dict[str, JobAccount] = {}

    def record(
        self,
        job: str,
        energy_j: float,
        work_units: float = 0.0,
        duration_s: float = 0.0,
        unit: str = "units",
        start_unix_s: float | None = None,
        end_unix_s: float | None = None,
    ) -> JobAccount:
        """Add energy and work to ``job``.

        Args:
            job: Job identifier (created on first use).
            energy_j: Energy used, joules (>= 0).
            work_units: Units of work done in that energy (>= 0).
            duration_s: Time it took, seconds.
            unit: Unit of work; must stay the same for a job.
            start_unix_s: Start of the interval, Unix seconds (needed with a time series).
            end_unix_s: End of the interval, Unix seconds.

        Returns:
            The job's updated account.

        Raises:
            ValueError: Negative energy or work, or a unit that differs from the job's.
        """
        if energy_j < 0 or work_units < 0:
            raise ValueError(f"job {job!r}: energy and work must be >= 0")
        account = self._jobs.setdefault(job, JobAccount(job=job, unit=unit))
        if account.unit != unit:
            raise ValueError(f"job {job!r} counts work in {account.unit!r}, not {unit!r}")
        account.carbon_g += carbon_g(energy_j, self.intensity, self.pue, start_unix_s, end_unix_s)
        account.energy_j += energy_j
        account.work_units += work_units
        account.duration_s += duration_s
        return account

    def record_measurement(
        self, job: str, measurement: Measurement, work_units: float = 0.0, unit: str = "units"
    ) -> JobAccount:
        """Add a meter window's total energy and duration to ``job``."""
        return self.record(
            job,
            measurement.total_energy_j,
            work_units=work_units,
            duration_s=measurement.duration_s,
            unit=unit,
            start_unix_s=measurement.start_unix_s,
            end_unix_s=measurement.end_unix_s,
        )

    def job(self, job: str) -> JobAccount:
        """The account of ``job``.

        Raises:
            KeyError: Nothing was recorded for ``job``.
        """
        return self._jobs[job]

    def jobs(self) -> list[JobAccount]:
        """Every job's account, in the order jobs were first recorded."""
        return list(self._jobs.values())

    def total_energy_j(self) -> float:
        """Energy of all jobs, joules."""
        return sum(a.energy_j for a in self._jobs.values())

    def total_carbon_g(self) -> float:
        """Emissions of all jobs, grams CO2e."""
        return sum(a.carbon_g for a in self._jobs.values())

    def to_dict(self) -> dict[str, Any]:
        """The ledger as a JSON-ready mapping: ``pue``, totals and ``jobs``."""
        return {
            "pue": self.pue,
            "energy_j": self.total_energy_j(),
            "carbon_g": self.total_carbon_g(),
            "jobs": {a.job: a.to_dict() for a in self._jobs.values()},
        }
