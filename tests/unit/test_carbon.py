"""Carbon arithmetic, the region table, intensity time series and the per-job ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from greenllm.energy.accounting import EnergyLedger
from greenllm.energy.carbon import (
    DEFAULT_REGION,
    GridIntensity,
    carbon_g,
    load_region_table,
)
from greenllm.energy.measurement import Measurement
from greenllm.errors import ConfigError

HOUR_S = 3600.0


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_one_kwh_at_481_g_with_pue_1_2_is_577_2_g() -> None:
    assert carbon_g(3_600_000.0, 481.0, pue=1.2) == pytest.approx(577.2)


def test_half_a_kwh_at_100_g_without_pue_is_50_g() -> None:
    assert carbon_g(1_800_000.0, 100.0) == pytest.approx(50.0)


def test_pue_below_one_is_rejected() -> None:
    with pytest.raises(ConfigError, match="PUE"):
        carbon_g(1.0, 100.0, pue=0.9)


def test_shipped_table_has_world_default_and_cites_every_row() -> None:
    table = load_region_table()
    assert DEFAULT_REGION == "world"
    assert {"world", "eu", "us", "fr", "de", "pl", "se", "no", "cn", "in"} <= set(table)
    for row in table.values():
        assert row.source and 2015 <= row.year <= 2030
        assert 0 < row.g_co2e_per_kwh < 1200
    # Sanity of the ordering the figures must show: hydro/nuclear grids below coal grids.
    assert table["no"].g_co2e_per_kwh < table["fr"].g_co2e_per_kwh < table["world"].g_co2e_per_kwh
    assert table["world"].g_co2e_per_kwh < table["in"].g_co2e_per_kwh


def test_region_lookup_is_case_insensitive_and_carries_its_source() -> None:
    fr = GridIntensity.for_region("FR")
    assert fr.is_constant
    assert fr.label == "fr"
    assert "Ember" in fr.source
    table = load_region_table()
    assert carbon_g(3_600_000.0, fr, pue=1.5) == pytest.approx(table["fr"].g_co2e_per_kwh * 1.5)


def test_unknown_region_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown grid region 'mars'.*world"):
        GridIntensity.for_region("mars")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("region,g\nfr,56\n", r":1: expected header region,g_co2e_per_kwh,source,year"),
        (
            "region,g_co2e_per_kwh,source,year\nfr,56,Ember,2023\nde,lots,Ember,2023\n",
            r":3: g_co2e_per_kwh must be a number",
        ),
        (
            "region,g_co2e_per_kwh,source,year\nfr,56,Ember,2023\nFR,57,Ember,2023\n",
            r":3: region 'fr' appears twice",
        ),
        ("region,g_co2e_per_kwh,source,year\nfr,56,,2023\n", r":2: source is empty"),
        ("region,g_co2e_per_kwh,source,year\nfr,56,Ember\n", r":2: expected 4 columns"),
        ("region,g_co2e_per_kwh,source,year\n", r"no data rows"),
    ],
)
def test_bad_region_table_names_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path / "table.csv", text)
    with pytest.raises(ConfigError, match=match) as info:
        load_region_table(path)
    assert str(path) in str(info.value)


def test_time_series_splits_energy_over_the_intensity_steps(tmp_path: Path) -> None:
    # 100 g/kWh for the first hour, 300 g/kWh from then on.
    path = write(tmp_path / "ci.csv", "timestamp,g_co2e_per_kwh\n0,100\n3600,300\n")
    series = GridIntensity.from_csv(path)
    assert not series.is_constant
    assert series.at(10.0) == 100.0
    assert series.at(3600.0) == 300.0
    assert series.at(1e9) == 300.0  # the last value holds on
    # 1 kWh spread evenly over 00:30-01:30: half at 100, half at 300 -> 200 g.
    assert carbon_g(3_600_000.0, series, start_unix_s=1800.0, end_unix_s=5400.0) == pytest.approx(
        200.0
    )
    # A quarter in the first step: 0.25*100 + 0.75*300 = 250 g, x PUE 1.2 = 300 g.
    assert carbon_g(
        3_600_000.0, series, pue=1.2, start_unix_s=2700.0, end_unix_s=6300.0
    ) == pytest.approx(300.0)
    # Inside one step.
    assert series.average_g_per_kwh(100.0, 200.0) == 100.0


def test_time_series_accepts_iso_8601_and_treats_naive_times_as_utc(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ci.csv",
        "timestamp,g_co2e_per_kwh\n"
        "2024-01-01T00:00:00Z,100\n"
        "2024-01-01T01:00:00,200\n"
        "2024-01-01T03:00:00+01:00,400\n",  # = 02:00 UTC
    )
    series = GridIntensity.from_csv(path)
    t0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z
    assert series.times_unix_s == [t0, t0 + HOUR_S, t0 + 2 * HOUR_S]
    # Three hours from t0: (100 + 200 + 400) / 3 g/kWh.
    assert series.average_g_per_kwh(t0, t0 + 3 * HOUR_S) == pytest.approx(700.0 / 3)


def test_time_series_needs_the_window(tmp_path: Path) -> None:
    series = GridIntensity.from_csv(
        write(tmp_path / "ci.csv", "timestamp,g_co2e_per_kwh\n0,1\n5,2\n")
    )
    with pytest.raises(ValueError, match="start_unix_s"):
        carbon_g(1.0, series)


def test_window_before_the_series_starts_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "ci.csv", "timestamp,g_co2e_per_kwh\n1000,100\n")
    series = GridIntensity.from_csv(path)
    with pytest.raises(ConfigError, match="series starts at"):
        series.average_g_per_kwh(500.0, 1500.0)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "time,value\n0,1\n",
            r":1: expected header t,gco2e_per_kwh.*timestamp,g_co2e_per_kwh, got time,value",
        ),
        ("timestamp,g_co2e_per_kwh\n0,1\n0,2\n", r":3: timestamps must increase"),
        ("timestamp,g_co2e_per_kwh\n0,1\nyesterday,2\n", r":3: timestamp must be ISO-8601"),
        ("timestamp,g_co2e_per_kwh\n0,1\n\n10,-5\n", r":4: g_co2e_per_kwh must be a finite"),
        ("timestamp,g_co2e_per_kwh\n0,1,2\n", r":2: expected 2 columns"),
        ("timestamp,g_co2e_per_kwh\nnan,1\n", r":2: timestamp must be finite"),
    ],
)
def test_bad_time_series_names_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path / "ci.csv", text)
    with pytest.raises(ConfigError, match=match) as info:
        GridIntensity.from_csv(path)
    assert str(info.value).startswith(str(path))


def test_missing_time_series_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        GridIntensity.from_csv(tmp_path / "absent.csv")


def measurement(energy_j: float, start_s: float, end_s: float) -> Measurement:
    return Measurement(
        name="w",
        start_s=start_s,
        end_s=end_s,
        start_unix_s=start_s,
        end_unix_s=end_s,
        gpu_energy_j={"sim-n-0": energy_j},
    )


def test_ledger_accumulates_joules_work_and_carbon_per_job() -> None:
    ledger = EnergyLedger(GridIntensity.constant(400.0), pue=1.25)
    ledger.record_measurement("train", measurement(1_800_000.0, 0.0, 100.0), 1000, "samples")
    ledger.record_measurement("train", measurement(1_800_000.0, 100.0, 300.0), 3000, "samples")
    ledger.record("serve", 360_000.0, work_units=9000, duration_s=60.0, unit="tokens")
    train = ledger.job("train")
    assert train.energy_j == 3_600_000.0
    assert train.work_units == 4000
    assert train.duration_s == 300.0
    assert train.joules_per_unit == 900.0
    assert train.carbon_g == pytest.approx(500.0)  # 1 kWh x 400 g/kWh x 1.25
    assert train.carbon_g_per_unit == pytest.approx(0.125)
    assert train.avg_power_w == 12_000.0
    serve = ledger.job("serve")
    assert serve.joules_per_unit == 40.0
    assert serve.carbon_g == pytest.approx(50.0)
    assert ledger.total_energy_j() == 3_960_000.0
    assert ledger.total_carbon_g() == pytest.approx(550.0)
    doc = ledger.to_dict()
    assert doc["jobs"]["serve"]["unit"] == "tokens"
    assert [a.job for a in ledger.jobs()] == ["train", "serve"]


def test_ledger_charges_each_record_at_the_intensity_of_its_time(tmp_path: Path) -> None:
    series = GridIntensity.from_csv(
        write(tmp_path / "ci.csv", "timestamp,g_co2e_per_kwh\n0,100\n3600,300\n")
    )
    ledger = EnergyLedger(series)
    ledger.record("job", 3_600_000.0, start_unix_s=0.0, end_unix_s=3600.0)
    ledger.record("job", 3_600_000.0, start_unix_s=3600.0, end_unix_s=7200.0)
    assert ledger.job("job").carbon_g == pytest.approx(400.0)


def test_ledger_without_work_has_no_ratio_and_checks_units() -> None:
    ledger = EnergyLedger()  # world default
    ledger.record("idle", 3_600_000.0)
    assert ledger.job("idle").joules_per_unit is None
    assert ledger.job("idle").carbon_g == pytest.approx(load_region_table()["world"].g_co2e_per_kwh)
    with pytest.raises(ValueError, match="counts work in"):
        ledger.record("idle", 1.0, work_units=1, unit="tokens")
    with pytest.raises(ValueError, match=">= 0"):
        ledger.record("idle", -1.0)
