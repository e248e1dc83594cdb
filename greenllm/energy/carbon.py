"""Carbon accounting: grams CO2-equivalent from energy, grid intensity and PUE.

    gCO2e = kWh x grid intensity (gCO2e/kWh) x PUE

The intensity comes from the shipped region table (``greenllm/data/grid_intensity.csv``:
yearly averages, each row citing its public source; the default region ``world`` is the
world average of Ember's Global Electricity Review 2024, 481 gCO2e/kWh for 2023) or from
a grid signal file (:meth:`GridIntensity.from_file`):

- a CSV ``t,gco2e_per_kwh[,price_per_kwh]`` (or the older header
  ``timestamp,g_co2e_per_kwh``), ``t`` as Unix seconds or ISO-8601 (naive times are UTC);
- the JSON document the Electricity Maps API returns for a zone's carbon-intensity
  history or forecast (``{"zone": ..., "history": [{"carbonIntensity": ...,
  "datetime": "...Z", ...}]}``; ``forecast`` in place of ``history``), saved to a file.

A series is piecewise constant: each value holds from its time to the next. Its step is
the median interval between its times; it covers up to one step past its last time, and
after that the last value holds on (:meth:`GridIntensity.runs_out_at_unix_s` says when).
A window's energy is spread evenly over its duration, so its carbon is its energy times
the time-weighted average intensity over the window.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from greenllm.errors import ConfigError

#: Joules per kilowatt-hour.
J_PER_KWH = 3_600_000.0
#: The region used when none is configured.
DEFAULT_REGION = "world"
#: The shipped table of yearly grid intensities.
REGION_TABLE_PATH = Path(__file__).resolve().parent.parent / "data" / "grid_intensity.csv"

_REGION_HEADER = ["region", "g_co2e_per_kwh", "source", "year"]
_SERIES_HEADER = ["timestamp", "g_co2e_per_kwh"]
_SIGNAL_HEADER = ["t", "gco2e_per_kwh"]
_SIGNAL_PRICE_HEADER = ["t", "gco2e_per_kwh", "price_per_kwh"]
#: Headers a grid signal CSV may start with.
SIGNAL_HEADERS = (_SIGNAL_HEADER, _SIGNAL_PRICE_HEADER, _SERIES_HEADER)
#: An interval longer than this many times the series' step is a gap.
GAP_FACTOR = 2.0


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


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _rows(
    path: Path, *headers: list[str], text: str | None = None
) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and data rows of a CSV file that starts with one of ``headers``, each
    row with its line number.

    Raises:
        ConfigError: The file is unreadable, the header is none of ``headers``, a row has
            the wrong number of columns, or there are no data rows.
    """
    if text is None:
        text = _read_text(path)
    expected = " or ".join(",".join(h) for h in headers)
    reader = csv.reader(text.splitlines())
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    for row in reader:
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if header is None:
            if cells not in headers:
                raise ConfigError(
                    f"{path}:{reader.line_num}: expected header {expected}, got {','.join(cells)}"
                )
            header = cells
        elif len(cells) != len(header):
            raise ConfigError(
                f"{path}:{reader.line_num}: expected {len(header)} columns "
                f"({','.join(header)}), got {len(cells)}"
            )
        else:
            rows.append((reader.line_num, cells))
    if header is None or not rows:
        raise ConfigError(f"{path}: no data rows (expected header {expected})")
    return header, rows


def load_region_table(path: str | Path = REGION_TABLE_PATH) -> dict[str, RegionIntensity]:
    """Read a region table (``region,g_co2e_per_kwh,source,year``).

    Raises:
        ConfigError: The file is unreadable or a row is invalid (``FILE:LINE: what``).
    """
    path = Path(path)
    table: dict[str, RegionIntensity] = {}
    for line, (region, value, source, year) in _rows(path, _REGION_HEADER)[1]:
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
    """Grid carbon intensity over time, gCO2e/kWh (and optionally the energy price per
    kWh): a constant or a piecewise-constant series.

    Build it with :meth:`constant`, :meth:`for_region`, :meth:`from_csv` or
    :meth:`from_file`.

    Args:
        times_unix_s: Start of each value, Unix seconds, strictly increasing.
        values_g_per_kwh: Intensity from each start to the next, gCO2e/kWh.
        label: What the intensity describes (region key or file).
        source: Where the figures come from.
        prices_per_kwh: Energy price from each start to the next, currency units per kWh
            (the file's own currency), or None when the signal carries no price.
    """

    def __init__(
        self,
        times_unix_s: list[float],
        values_g_per_kwh: list[float],
        label: str,
        source: str,
        prices_per_kwh: list[float] | None = None,
    ) -> None:
        if not values_g_per_kwh or len(times_unix_s) != len(values_g_per_kwh):
            raise ValueError("need one or more values, one time per value")
        if prices_per_kwh is not None and len(prices_per_kwh) != len(values_g_per_kwh):
            raise ValueError("need one price per value")
        if any(b <= a for a, b in pairwise(times_unix_s)):
            raise ValueError("times must increase strictly")
        self.times_unix_s = list(times_unix_s)
        self.values_g_per_kwh = list(values_g_per_kwh)
        self.prices_per_kwh = list(prices_per_kwh) if prices_per_kwh is not None else None
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
    def from_file(cls, path: str | Path) -> GridIntensity:
        """A grid signal from a file: the Electricity Maps JSON (a ``.json`` file, or one
        whose first character is ``{``) or a CSV (:meth:`from_csv`).

        Raises:
            ConfigError: One line ``FILE:LINE: what``: unreadable, another format, a gap,
                a negative, NaN or missing value, or times that do not increase.
        """
        path = Path(path)
        text = _read_text(path)
        if path.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
            return cls._from_electricity_maps(path, text)
        return cls.from_csv(path, text=text)

    @classmethod
    def from_csv(cls, path: str | Path, text: str | None = None) -> GridIntensity:
        """A time series from a CSV file ``t,gco2e_per_kwh[,price_per_kwh]`` (or
        ``timestamp,g_co2e_per_kwh``).

        Args:
            path: The file.
            text: Its contents when already read.

        Raises:
            ConfigError: The file is unreadable, a row is invalid, a value is missing,
                timestamps do not increase or an interval is a gap (``FILE:LINE: what``).
        """
        path = Path(path)
        header, rows = _rows(path, *SIGNAL_HEADERS, text=text)
        times: list[float] = []
        values: list[float] = []
        prices: list[float] | None = [] if len(header) == 3 else None
        lines: list[int] = []
        for line, cells in rows:
            where = f"{path}:{line}"
            for name, cell in zip(header, cells, strict=True):
                if not cell:
                    raise ConfigError(f"{where}: {name} is missing (a gap in the signal)")
            t = _parse_timestamp(cells[0], where)
            if times and t <= times[-1]:
                raise ConfigError(f"{where}: timestamps must increase, {cells[0]!r} does not")
            times.append(t)
            values.append(_number(cells[1], where, header[1]))
            if prices is not None:
                prices.append(_number(cells[2], where, header[2]))
            lines.append(line)
        _check_gaps(path, times, lines)
        return cls(times, values, str(path), f"time series {path}", prices)

    @classmethod
    def _from_electricity_maps(cls, path: Path, text: str) -> GridIntensity:
        """The Electricity Maps carbon-intensity history (or forecast) document."""
        try:
            doc: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        key = next((k for k in ("history", "forecast") if isinstance(doc, dict) and k in doc), None)
        if key is None or not isinstance(doc[key], list):
            raise ConfigError(
                f"{path}:1: unknown signal format: expected the Electricity Maps document "
                '{"zone": ..., "history": [{"carbonIntensity": ..., "datetime": ...}]} '
                "(or a CSV t,gco2e_per_kwh[,price_per_kwh])"
            )
        entries: list[Any] = doc[key]
        if not entries:
            raise ConfigError(f"{path}:1: {key} is empty")
        times: list[float] = []
        values: list[float] = []
        lines: list[int] = []
        search_from = 0
        for i, entry in enumerate(entries):
            # The entry's line: where its "datetime" key sits (entries come in order).
            found = text.find('"datetime"', search_from)
            line = text.count("\n", 0, found) + 1 if found >= 0 else 1
            search_from = found + 1 if found >= 0 else search_from
            where = f"{path}:{line}: {key}[{i}]"
            if not isinstance(entry, dict) or "datetime" not in entry:
                raise ConfigError(f"{where}: expected an object with datetime and carbonIntensity")
            stamp = entry["datetime"]
            if not isinstance(stamp, str):
                raise ConfigError(f"{where}: datetime must be an ISO-8601 string, got {stamp!r}")
            t = _parse_timestamp(stamp, where)
            if times and t <= times[-1]:
                raise ConfigError(f"{where}: datetimes must increase, {stamp!r} does not")
            value = entry.get("carbonIntensity")
            if value is None:
                raise ConfigError(f"{where}: carbonIntensity is missing (a gap in the signal)")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{where}: carbonIntensity must be a number, got {value!r}")
            times.append(t)
            values.append(_number(repr(float(value)), where, "carbonIntensity"))
            lines.append(line)
        _check_gaps(path, times, lines)
        zone = doc.get("zone")
        label = f"{path} ({zone})" if isinstance(zone, str) else str(path)
        return cls(times, values, label, f"Electricity Maps {key} {path}")

    @property
    def is_constant(self) -> bool:
        """Whether the intensity does not depend on time."""
        return len(self.values_g_per_kwh) == 1 and self.times_unix_s[0] == -math.inf

    @property
    def has_price(self) -> bool:
        """Whether the signal carries an energy price."""
        return self.prices_per_kwh is not None

    @property
    def step_s(self) -> float:
        """The series' step: the median interval between its times, seconds (inf for a
        constant or a single value)."""
        if len(self.times_unix_s) < 2:
            return math.inf
        return statistics.median(b - a for a, b in pairwise(self.times_unix_s))

    @property
    def runs_out_at_unix_s(self) -> float:
        """When the series runs out: one step past its last time, Unix seconds (inf for a
        constant). After it the last value holds on."""
        return self.times_unix_s[-1] + self.step_s

    def ran_out(self, unix_s: float) -> bool:
        """Whether ``unix_s`` lies past the end of the series (its last value held on)."""
        return unix_s >= self.runs_out_at_unix_s

    def next_change_unix_s(self, unix_s: float) -> float:
        """The first time after ``unix_s`` where a new value starts, Unix seconds (inf
        when none does)."""
        i = bisect.bisect_right(self.times_unix_s, unix_s)
        return self.times_unix_s[i] if i < len(self.times_unix_s) else math.inf

    def at(self, unix_s: float) -> float:
        """Intensity in force at ``unix_s``, gCO2e/kWh."""
        self._check_covered(unix_s)
        return self.values_g_per_kwh[bisect.bisect_right(self.times_unix_s, unix_s) - 1]

    def price_at(self, unix_s: float) -> float | None:
        """Energy price in force at ``unix_s``, per kWh (None: the signal has no price)."""
        if self.prices_per_kwh is None:
            return None
        self._check_covered(unix_s)
        return self.prices_per_kwh[bisect.bisect_right(self.times_unix_s, unix_s) - 1]

    def average_g_per_kwh(self, start_unix_s: float, end_unix_s: float) -> float:
        """Time-weighted average intensity over ``[start, end]``, gCO2e/kWh.

        Raises:
            ConfigError: The window starts before the series' first timestamp.
        """
        return self._average(self.values_g_per_kwh, start_unix_s, end_unix_s)

    def average_price_per_kwh(self, start_unix_s: float, end_unix_s: float) -> float | None:
        """Time-weighted average price over ``[start, end]``, per kWh (None: no price).

        Raises:
            ConfigError: The window starts before the series' first timestamp.
        """
        if self.prices_per_kwh is None:
            return None
        return self._average(self.prices_per_kwh, start_unix_s, end_unix_s)

    def _average(self, values: list[float], start_unix_s: float, end_unix_s: float) -> float:
        self._check_covered(start_unix_s)
        i = bisect.bisect_right(self.times_unix_s, start_unix_s) - 1
        if end_unix_s <= start_unix_s:
            return values[i]
        weighted = 0.0
        t = start_unix_s
        while t < end_unix_s:
            segment_end = self.times_unix_s[i + 1] if i + 1 < len(self.times_unix_s) else math.inf
            upto = min(segment_end, end_unix_s)
            weighted += values[i] * (upto - t)
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


def _check_gaps(path: Path, times: list[float], lines: list[int]) -> None:
    """Reject an interval longer than :data:`GAP_FACTOR` times the series' step.

    Raises:
        ConfigError: ``FILE:LINE: gap ...`` naming the line after the gap.
    """
    if len(times) < 3:
        return
    step = statistics.median(b - a for a, b in pairwise(times))
    for i in range(1, len(times)):
        interval = times[i] - times[i - 1]
        if interval > GAP_FACTOR * step:
            raise ConfigError(
                f"{path}:{lines[i]}: a gap in the signal: {interval:g} s since the previous "
                f"value, the series' step is {step:g} s"
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
