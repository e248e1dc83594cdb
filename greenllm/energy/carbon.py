"""Carbon accounting: grams CO2-equivalent from energy, grid intensity and PUE.

    gCO2e = kWh x grid intensity (gCO2e/kWh) x PUE

The intensity comes from the shipped region table (``greenllm/data/grid_intensity.csv``:
yearly averages, each row citing its public source; the default region ``world`` is the
world average of Ember's Global Electricity Review 2024, 481 gCO2e/kWh for 2023) or from
a time-series CSV ``timestamp,g_co2e_per_kwh`` (ISO-8601, naive times taken as UTC, or
Unix seconds), read as piecewise constant: each value holds from its timestamp to the
next, and the last one holds on. A window's energy is spread evenly over its duration,
so its carbon is its energy times the time-weighted average intensity over the window.
"""

from __future__ import annotations

import bisect
import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

from greenllm.errors import ConfigError

#: Joules per kilowatt-hour.
J_PER_KWH = 3_600_000.0
#: The region used when none is configured.
DEFAULT_REGION = "world"
#: The shipped table of yearly grid intensities.
REGION_TABLE_PATH = Path(__file__).resolve().parent.parent / "data" / "grid_intensity.csv"

_REGION_HEADER = ["region", "g_co2e_per_kwh", "source", "year"]
_SERIES_HEADER = ["timestamp", "g_co2e_per_kwh"]


@dataclass(frozen=True)
class RegionIntensity:
    """One row of the region table.

    Attributes:
        region: Region key (lower case), e.g. ``fr``.
        g_co2e_per_kwh: Yearly average grid intensity, gCO2e/kWh.
        source: The public source of the figure.
        year: The year the figure describes.
    """

    region: str
    g_co2e_per_kwh: float
    source: str
    year: int


def _number(text: str, where: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {what} must be a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{where}: {what} must be a finite number >= 0, got {text!r}")
    return value


def _rows(path: Path, header: list[str]) -> list[tuple[int, list[str]]]:
    """The data rows of a CSV file that starts with ``header``, with their line numbers.

    Raises:
        ConfigError: The file is unreadable, the header differs, a row has the wrong
            number of columns, or there are no data rows.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    expected = ",".join(header)
    reader = csv.reader(text.splitlines())
    header_seen = False
    rows: list[tuple[int, list[str]]] = []
    for row in reader:
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if not header_seen:
            if cells != header:
                raise ConfigError(
                    f"{path}:{reader.line_num}: expected header {expected}, got {','.join(cells)}"
                )
            header_seen = True
        elif len(cells) != len(header):
            raise ConfigError(
                f"{path}:{reader.line_num}: expected {len(header)} columns ({expected}), "
                f"got {len(cells)}"
            )
        else:
            rows.append((reader.line_num, cells))
    if not rows:
        raise ConfigError(f"{path}: no data rows (expected header {expected})")
    return rows


def load_region_table(path: str | Path = REGION_TABLE_PATH) -> dict[str, RegionIntensity]:
    """Read a region table (``region,g_co2e_per_kwh,source,year``).

    Raises:
        ConfigError: The file is unreadable or a row is invalid (``FILE:LINE: what``).
    """
    path = Path(path)
    table: dict[str, RegionIntensity] = {}
    for line, (region, value, source, year) in _rows(path, _REGION_HEADER):
        where = f"{path}:{line}"
        key = region.lower()
        if not key:
            raise ConfigError(f"{where}: region is empty")
        if key in table:
            raise ConfigError(f"{where}: region {key!r} appears twice")
        if not source:
            raise ConfigError(f"{where}: source is empty (cite where the figure comes from)")
        if not year.isdigit():
            raise ConfigError(f"{where}: year must be a whole number, got {year!r}")
        table[key] = RegionIntensity(
            key, _number(value, where, "g_co2e_per_kwh"), source, int(year)
        )
    return table


def _parse_timestamp(text: str, where: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ConfigError(f"{where}: timestamp must be finite, got {text!r}")
        return seconds
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{where}: timestamp must be ISO-8601 or Unix seconds, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class GridIntensity:
    """Grid carbon intensity over time, gCO2e/kWh: a constant or a piecewise-constant series.

    Build it with :meth:`constant`, :meth:`for_region` or :meth:`from_csv`.

    Args:
        times_unix_s: Start of each value, Unix seconds, strictly increasing.
        values_g_per_kwh: Intensity from each start to the next, gCO2e/kWh.
        label: What the intensity describes (region key or file).
        source: Where the figures come from.
    """

    def __init__(
        self,
        times_unix_s: list[float],
        values_g_per_kwh: list[float],
        label: str,
        source: str,
    ) -> None:
        if not values_g_per_kwh or len(times_unix_s) != len(values_g_per_kwh):
            raise ValueError("need one or more values, one time per value")
        if any(b <= a for a, b in pairwise(times_unix_s)):
            raise ValueError("times must increase strictly")
        self.times_unix_s = list(times_unix_s)
        self.values_g_per_kwh = list(values_g_per_kwh)
        self.label = label
        self.source = source

    @classmethod
    def constant(
        cls, g_co2e_per_kwh: float, label: str = "custom", source: str = "user-supplied"
    ) -> GridIntensity:
        """One intensity at all times, gCO2e/kWh."""
        return cls([-math.inf], [g_co2e_per_kwh], label, source)

    @classmethod
    def for_region(
        cls, region: str = DEFAULT_REGION, table_path: str | Path = REGION_TABLE_PATH
    ) -> GridIntensity:
        """The yearly intensity of ``region`` from the region table.

        Raises:
            ConfigError: The region is not in the table (the message lists known ones).
        """
        table = load_region_table(table_path)
        row = table.get(region.lower())
        if row is None:
            raise ConfigError(
                f"unknown grid region {region!r}; known regions: {', '.join(sorted(table))}"
            )
        return cls.constant(row.g_co2e_per_kwh, row.region, f"{row.source} ({row.year})")

    @classmethod
    def from_csv(cls, path: str | Path) -> GridIntensity:
        """A time series from a CSV file ``timestamp,g_co2e_per_kwh``.

        Raises:
            ConfigError: The file is unreadable, a row is invalid or timestamps do not
                increase (``FILE:LINE: what``).
        """
        path = Path(path)
        times: list[float] = []
        values: list[float] = []
        for line, (stamp, value) in _rows(path, _SERIES_HEADER):
            where = f"{path}:{line}"
            t = _parse_timestamp(stamp, where)
            if times and t <= times[-1]:
                raise ConfigError(f"{where}: timestamps must increase, {stamp!r} does not")
            times.append(t)
            values.append(_number(value, where, "g_co2e_per_kwh"))
        return cls(times, values, str(path), f"time series {path}")

    @property
    def is_constant(self) -> bool:
        """Whether the intensity does not depend on time."""
        return len(self.values_g_per_kwh) == 1 and self.times_unix_s[0] == -math.inf

    def at(self, unix_s: float) -> float:
        """Intensity in force at ``unix_s``, gCO2e/kWh."""
        self._check_covered(unix_s)
        return self.values_g_per_kwh[bisect.bisect_right(self.times_unix_s, unix_s) - 1]

    def average_g_per_kwh(self, start_unix_s: float, end_unix_s: float) -> float:
        """Time-weighted average intensity over ``[start, end]``, gCO2e/kWh.

        Raises:
            ConfigError: The window starts before the series' first timestamp.
        """
        if end_unix_s <= start_unix_s:
            return self.at(start_unix_s)
        self._check_covered(start_unix_s)
        i = bisect.bisect_right(self.times_unix_s, start_unix_s) - 1
        weighted = 0.0
        t = start_unix_s
        while t < end_unix_s:
            segment_end = self.times_unix_s[i + 1] if i + 1 < len(self.times_unix_s) else math.inf
            upto = min(segment_end, end_unix_s)
            weighted += self.values_g_per_kwh[i] * (upto - t)
            t = upto
            i += 1
        return weighted / (end_unix_s - start_unix_s)

    def _check_covered(self, unix_s: float) -> None:
        first = self.times_unix_s[0]
        if unix_s < first:
            first_iso = datetime.fromtimestamp(first, UTC).isoformat()
            at_iso = datetime.fromtimestamp(unix_s, UTC).isoformat()
            raise ConfigError(
                f"{self.label}: no grid intensity for {at_iso}: the series starts at {first_iso}"
            )


def check_pue(pue: float) -> float:
    """Return ``pue`` if it is a valid power usage effectiveness (>= 1).

    Raises:
        ConfigError: ``pue`` is below 1 or not finite.
    """
    if not (math.isfinite(pue) and pue >= 1.0):
        raise ConfigError(f"PUE must be a number >= 1, got {pue!r}")
    return pue


def carbon_g(
    energy_j: float,
    intensity: float | GridIntensity,
    pue: float = 1.0,
    start_unix_s: float | None = None,
    end_unix_s: float | None = None,
) -> float:
    """Emissions of ``energy_j`` joules of IT energy, grams CO2e.

    ``energy_j / 3.6e6`` kWh x intensity (gCO2e/kWh) x ``pue``.

    Args:
        energy_j: Energy drawn by the devices, joules.
        intensity: gCO2e/kWh, or a :class:`GridIntensity`.
        pue: Power usage effectiveness of the facility (>= 1).
        start_unix_s: Start of the window the energy was drawn in, Unix seconds (needed
            for a time series).
        end_unix_s: End of that window, Unix seconds.

    Raises:
        ConfigError: ``pue`` < 1, or the window lies before a time series begins.
        ValueError: A time series without the window's start and end.
    """
    check_pue(pue)
    if isinstance(intensity, GridIntensity):
        if intensity.is_constant:
            g_per_kwh = intensity.values_g_per_kwh[0]
        elif start_unix_s is None or end_unix_s is None:
            raise ValueError("a grid intensity time series needs start_unix_s and end_unix_s")
        else:
            g_per_kwh = intensity.average_g_per_kwh(start_unix_s, end_unix_s)
    else:
        g_per_kwh = intensity
    return energy_j / J_PER_KWH * g_per_kwh * pue
