"""RAPL through a fake powercap tree: zones, wraparound, unreadable counters."""

from __future__ import annotations

from pathlib import Path

import pytest

from greenllm.energy import EnergyMeter
from greenllm.energy.rapl import RaplReader, counter_delta_uj

MAX_UJ = 262_143_328_850


def make_zone(path: Path, name: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    path.mkdir(parents=True)
    (path / "name").write_text(f"{name}\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def set_uj(zone: Path, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A one-socket machine as Linux lays it out: subzones nested in their package and
    linked again at the top level, plus psys and the control-type folder."""
    root = tmp_path / "powercap"
    root.mkdir()
    (root / "intel-rapl").mkdir()  # the control type, not a zone
    pkg = make_zone(root / "intel-rapl:0", "package-0", 1_000_000)
    core = make_zone(pkg / "intel-rapl:0:0", "core", 500_000)
    dram = make_zone(pkg / "intel-rapl:0:1", "dram", 2_000_000)
    (root / "intel-rapl:0:0").symlink_to(core)
    (root / "intel-rapl:0:1").symlink_to(dram)
    psys = make_zone(root / "intel-rapl:1", "psys", 7_000_000)
    return {"root": root, "pkg": pkg, "core": core, "dram": dram, "psys": psys}


def test_zones_are_found_once_with_keys_and_total_flags(tree: dict[str, Path]) -> None:
    reader = RaplReader(tree["root"])
    assert reader.available and reader.unavailable_reason is None
    zones = {z.key: z.in_total for z in reader.zones}
    assert zones == {
        "package-0": True,
        "package-0/core": False,
        "package-0/dram": True,
        "psys": False,
    }


def test_energy_is_the_counter_difference_in_joules(tree: dict[str, Path]) -> None:
    reader = RaplReader(tree["root"])
    assert reader.read_j() == {
        k: 0.0 for k in ("package-0", "package-0/core", "package-0/dram", "psys")
    }
    set_uj(tree["pkg"], 1_000_000 + 25_500_000)
    set_uj(tree["dram"], 2_000_000 + 3_000_000)
    reading = reader.read_j()
    assert reading is not None
    assert reading["package-0"] == 25.5
    assert reading["package-0/dram"] == 3.0
    assert reading["package-0/core"] == 0.0


def test_wraparound_is_added_back(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    root.mkdir()
    pkg = make_zone(root / "intel-rapl:0", "package-0", 999_000_000, max_uj=1_000_000_000)
    reader = RaplReader(root)
    set_uj(pkg, 4_000_000)  # wrapped: 1_000_001 uJ to the top, then 4 J more
    first = reader.read_j()
    assert first == {"package-0": pytest.approx(5.000001)}
    set_uj(pkg, 6_000_000)
    assert reader.read_j() == {"package-0": pytest.approx(7.000001)}


def test_counter_delta_without_and_with_wrap() -> None:
    assert counter_delta_uj(100, 250, 1000) == 150
    assert counter_delta_uj(900, 50, 1000) == 151  # 900 -> 1000 (100), 1000 -> 0 (1), -> 50
    assert counter_delta_uj(7, 7, 1000) == 0


def test_missing_powercap_is_unavailable_not_zero(tmp_path: Path) -> None:
    reader = RaplReader(tmp_path / "nope")
    assert not reader.available
    assert reader.read_j() is None
    assert "no RAPL powercap interface" in (reader.unavailable_reason or "")


def test_tree_without_zones_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "intel-rapl").mkdir()
    reader = RaplReader(tmp_path)
    assert reader.read_j() is None
    assert reader.unavailable_reason == f"no RAPL zones under {tmp_path}"


def test_permission_denied_is_unavailable_with_a_reason(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_read_text = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", read_text)
    reader = RaplReader(tree["root"])
    assert reader.read_j() is None
    assert reader.zones == []
    assert "permission denied" in (reader.unavailable_reason or "")
    assert "energy_uj" in (reader.unavailable_reason or "")


def test_a_read_that_fails_later_makes_the_window_unavailable(tree: dict[str, Path]) -> None:
    reader = RaplReader(tree["root"])
    (tree["psys"] / "energy_uj").unlink()
    assert reader.read_j() is None
    assert "RAPL read failed" in (reader.unavailable_reason or "")


def test_meter_reports_rapl_zones_and_counts_packages_and_dram(tree: dict[str, Path]) -> None:
    now = [0.0]
    meter = EnergyMeter([], rapl=tree["root"], clock=lambda: now[0], cpu_estimate=True)
    with meter.window("w") as w:
        now[0] = 2.0
        set_uj(tree["pkg"], 1_000_000 + 100_000_000)  # 100 J
        set_uj(tree["core"], 500_000 + 60_000_000)  # 60 J, inside the package
        set_uj(tree["dram"], 2_000_000 + 10_000_000)  # 10 J
        set_uj(tree["psys"], 7_000_000 + 150_000_000)  # 150 J, the whole platform
    m = w.result
    assert m is not None
    assert m.cpu_energy_j == {
        "package-0": 100.0,
        "package-0/core": 60.0,
        "package-0/dram": 10.0,
        "psys": 150.0,
    }
    assert m.cpu_total_j == 110.0
    assert m.total_energy_j == 110.0  # the estimate is not added on top of RAPL
    assert m.total_includes == ["gpu", "rapl"]
    assert m.avg_power_w == 55.0
    rows = {r.device: r for r in m.devices()}
    assert rows["cpu package-0"].source == "rapl"
    assert rows["cpu package-0"].avg_power_w == 50.0
    assert not rows["cpu package-0/core"].in_total
    assert not rows["cpu estimate"].in_total


def test_meter_poll_catches_a_wrap_between_begin_and_end(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    root.mkdir()
    pkg = make_zone(root / "intel-rapl:0", "package-0", 0, max_uj=9_999_999)
    meter = EnergyMeter([], rapl=root)
    meter.begin_window("long")
    set_uj(pkg, 8_000_000)
    meter.poll()
    set_uj(pkg, 3_000_000)  # wrapped once since the poll
    m = meter.end_window("long")
    assert m.cpu_energy_j == {"package-0": pytest.approx(13.0)}
