"""Grid signal files: the CSV t,gco2e_per_kwh[,price_per_kwh] and the Electricity Maps
JSON, their coverage (a signal that runs out holds its last value) and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greenllm.energy.carbon import GridIntensity
from greenllm.errors import ConfigError

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def em_doc(values: list[float | None], hours: list[int] | None = None) -> str:
    """An Electricity Maps carbon-intensity history document, one entry per line."""
    hours = hours if hours is not None else list(range(len(values)))
    entries = [
        {
            "zone": "DE",
            "carbonIntensity": v,
            "datetime": f"2026-01-01T{h:02d}:00:00.000Z",
            "updatedAt": "2026-01-02T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z",
            "emissionFactorType": "lifecycle",
            "isEstimated": False,
            "estimationMethod": None,
        }
        for v, h in zip(values, hours, strict=True)
    ]
    body = ",\n".join("    " + json.dumps(e) for e in entries)
    return '{\n  "zone": "DE",\n  "history": [\n' + body + "\n  ]\n}\n"


def test_csv_with_price_reads_intensity_and_price_per_interval(tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.csv",
        "t,gco2e_per_kwh,price_per_kwh\n0,100,0.10\n60,300,0.30\n120,200,0.20\n",
    )
    signal = GridIntensity.from_file(path)
    assert signal.has_price
    assert signal.at(59.0) == 100.0
    assert signal.price_at(60.0) == 0.30
    assert signal.step_s == 60.0
    # Half a minute at 100 and half at 300: 200 g/kWh, 0.20 per kWh.
    assert signal.average_g_per_kwh(30.0, 90.0) == pytest.approx(200.0)
    assert signal.average_price_per_kwh(30.0, 90.0) == pytest.approx(0.20)
    assert signal.next_change_unix_s(61.0) == 120.0
    # It covers one step past its last time, then the last value holds on.
    assert signal.runs_out_at_unix_s == 180.0
    assert not signal.ran_out(179.0)
    assert signal.ran_out(180.0)
    assert signal.at(10_000.0) == 200.0


def test_csv_without_price_has_none(tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.csv", "t,gco2e_per_kwh\n2026-01-01T00:00:00Z,50\n2026-01-01T01:00:00Z,70\n"
    )
    signal = GridIntensity.from_file(path)
    assert not signal.has_price
    assert signal.price_at(T0) is None
    assert signal.average_price_per_kwh(T0, T0 + 10) is None
    assert signal.times_unix_s == [T0, T0 + 3600.0]


def test_electricity_maps_history(tmp_path: Path) -> None:
    path = write(tmp_path / "de.json", em_doc([300.0, 250.0, 120.0]))
    signal = GridIntensity.from_file(path)
    assert signal.times_unix_s == [T0, T0 + 3600.0, T0 + 7200.0]
    assert signal.values_g_per_kwh == [300.0, 250.0, 120.0]
    assert "DE" in signal.label
    assert not signal.has_price
    assert signal.runs_out_at_unix_s == T0 + 3 * 3600.0


def test_electricity_maps_forecast_key(tmp_path: Path) -> None:
    doc = em_doc([10.0, 20.0]).replace('"history"', '"forecast"')
    signal = GridIntensity.from_file(write(tmp_path / "f.json", doc))
    assert signal.values_g_per_kwh == [10.0, 20.0]


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("s.csv", "t,gco2e_per_kwh\n0,1\n60,\n120,3\n", r":3: gco2e_per_kwh is missing"),
        ("s.csv", "t,gco2e_per_kwh\n0,1\n60,2\n120,3\n600,4\n", r":5: a gap in the signal"),
        ("s.csv", "t,gco2e_per_kwh\n0,1\n60,-2\n", r":3: gco2e_per_kwh must be a finite"),
        ("s.csv", "t,gco2e_per_kwh\n0,1\n60,nan\n", r":3: gco2e_per_kwh must be a finite"),
        ("s.csv", "t,gco2e_per_kwh,price_per_kwh\n0,1,inf\n", r":2: price_per_kwh must be a fin"),
        ("s.csv", "t,gco2e_per_kwh\n60,1\n0,2\n", r":3: timestamps must increase"),
        ("s.csv", "time,co2\n0,1\n", r":1: expected header t,gco2e_per_kwh"),
        ("s.json", '{"zone": "DE", "data": []}', r":1: unknown signal format"),
        ("s.json", '{"zone": "DE",\n "history": [}', r":2: not valid JSON"),
        ("s.json", em_doc([1.0, None, 3.0]), r":5: history\[1\]: carbonIntensity is missing"),
        ("s.json", em_doc([1.0, 2.0, -3.0]), r":6: history\[2\]: carbonIntensity must be a fin"),
        ("s.json", em_doc([1.0, 2.0, 3.0], [0, 2, 1]), r":6: history\[2\]: datetimes must incr"),
        ("s.json", em_doc([1.0, 2.0, 3.0, 4.0], [0, 1, 2, 9]), r":7: a gap in the signal"),
    ],
)
def test_bad_signal_files_are_one_line_naming_file_and_line(
    tmp_path: Path, name: str, text: str, match: str
) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=match) as info:
        GridIntensity.from_file(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "\n" not in message
