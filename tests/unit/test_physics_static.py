"""Per-type static and idle power, and the deep-cap regime it produces (issue 12, item 4).

Published training traces on Ampere boards show throughput collapsing to a quarter-half of
uncapped near the minimum limit while energy per unit rises above uncapped, up to ~1.7x:
static power over a much longer run. Types whose limit range is narrow cannot be capped
that deep, and stay below uncapped energy at their minimum limit (Zeus: V100 at 60% of its
limit, 0.80x energy).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from greenllm.devices import physics
from greenllm.devices.catalog import (
    CATALOG,
    STATIC_FRACTION_OF_MIN_CAP,
    get_spec,
    spec_for_inventory,
    spec_from_reported,
)
from greenllm.devices.physics import Workload, operating_point

TRAIN = Workload("train")

# Types whose minimum limit is a third of TDP or less: (throughput, energy per unit) at
# the minimum limit against uncapped. Published: 0.25-0.5x throughput, energy above
# uncapped up to ~1.7x; the lower throughput bound is read as 0.2 (A100-SXM4's minimum
# is 25% of TDP, the deepest of the measured types).
WIDE_RANGE = {
    "H100-SXM": ((0.20, 0.50), (1.0, 1.7)),
    "A100-SXM4": ((0.20, 0.50), (1.0, 1.7)),
    "A40": ((0.20, 0.50), (1.0, 1.7)),
    "H200-SXM": ((0.20, 0.50), (1.0, 1.7)),
    "L40S": ((0.20, 0.50), (1.0, 1.7)),
    # 200 W minimum (an estimate) is 20% of TDP: deeper than any measured type.
    "B200": ((0.10, 0.50), (1.0, 1.7)),
}
NARROW_RANGE = ["A100-PCIe", "L4", "V100-SXM2", "H100-PCIe"]


def _relative(name: str, limit_w: float) -> tuple[float, float]:
    spec = get_spec(name)
    base = operating_point(spec, TRAIN, spec.max_power_limit_w)
    capped = operating_point(spec, TRAIN, limit_w)
    return capped.throughput / base.throughput, capped.joules_per_unit / base.joules_per_unit


def test_catalog_splits_the_types_by_limit_range() -> None:
    assert set(WIDE_RANGE) | set(NARROW_RANGE) == set(CATALOG)
    for name in WIDE_RANGE:
        assert get_spec(name).min_power_limit_w <= get_spec(name).tdp_w / 3
    for name in NARROW_RANGE:
        assert get_spec(name).min_power_limit_w > get_spec(name).tdp_w / 3


@pytest.mark.parametrize("name", CATALOG)
def test_every_type_has_its_own_static_power(name: str) -> None:
    spec = get_spec(name)
    assert spec.static_power_w is not None
    assert spec.load_static_power_w == spec.static_power_w
    # Inside the window the Zeus 40%-cap point allows (0.12-0.155 of TDP; up to 0.18
    # where 40% is under the minimum limit).
    top = 0.155 if spec.min_power_limit_w <= 0.4 * spec.tdp_w else 0.18
    assert 0.12 <= spec.static_power_w / spec.tdp_w <= top
    if name != "L4":  # L4 idles at 0.22 of TDP, above the window
        assert spec.static_power_w >= spec.idle_power_w


def test_static_power_differs_by_type() -> None:
    fractions = {round(s.load_static_power_w / s.tdp_w, 3) for s in CATALOG.values()}
    assert len(fractions) >= 5


@pytest.mark.parametrize("name", WIDE_RANGE)
def test_deep_cap_collapses_on_wide_range_types(name: str) -> None:
    (t_lo, t_hi), (e_lo, e_hi) = WIDE_RANGE[name]
    spec = get_spec(name)
    rel_throughput, rel_energy = _relative(name, spec.min_power_limit_w)
    assert t_lo <= rel_throughput <= t_hi
    assert e_lo < rel_energy <= e_hi


@pytest.mark.parametrize("name", WIDE_RANGE)
def test_energy_rises_all_the_way_down_to_the_minimum_limit(name: str) -> None:
    spec = get_spec(name)
    limits = [spec.min_power_limit_w * k for k in (1.0, 1.1, 1.2, 1.3)] + [0.6 * spec.tdp_w]
    energies = [_relative(name, limit)[1] for limit in limits]
    assert energies == sorted(energies, reverse=True)
    assert energies[-1] < 0.9  # the bottom of the U is well below uncapped


@pytest.mark.parametrize("name", NARROW_RANGE)
def test_narrow_range_types_cannot_be_capped_into_the_collapse(name: str) -> None:
    spec = get_spec(name)
    rel_throughput, rel_energy = _relative(name, spec.min_power_limit_w)
    assert rel_throughput >= 0.6
    assert rel_energy < 0.9


def test_more_static_power_means_a_deeper_collapse() -> None:
    spec = get_spec("A40")
    results = []
    for static_w in (36.0, 40.0, 45.0):
        variant = replace(spec, static_power_w=static_w)
        base = operating_point(variant, TRAIN, variant.max_power_limit_w)
        deep = operating_point(variant, TRAIN, variant.min_power_limit_w)
        # Uncapped training draws the same share of TDP whatever the static power.
        assert base.power_w == pytest.approx(physics.LOAD_FRAC * variant.tdp_w)
        results.append(
            (deep.throughput / base.throughput, deep.joules_per_unit / base.joules_per_unit)
        )
    throughputs = [t for t, _ in results]
    energies = [e for _, e in results]
    assert throughputs == sorted(throughputs, reverse=True)
    assert energies == sorted(energies)


@pytest.mark.parametrize("name", CATALOG)
def test_static_power_is_the_floor_of_power_under_load(name: str) -> None:
    spec = get_spec(name)
    lowest = spec.min_sm_clock_mhz
    for kind in physics.WORKLOAD_KINDS:
        power = physics.power_w(spec, Workload(kind), lowest)
        assert power >= max(spec.idle_power_w, spec.load_static_power_w)
    assert physics.power_w(spec, None, lowest) == spec.idle_power_w


@pytest.mark.parametrize("name", CATALOG)
def test_lowest_clock_fits_the_minimum_limit_on_every_type(name: str) -> None:
    spec = get_spec(name)
    for kind in physics.WORKLOAD_KINDS:
        point = operating_point(spec, Workload(kind), spec.min_power_limit_w)
        assert point.power_w <= spec.min_power_limit_w
        assert point.throughput > 0


@pytest.mark.parametrize("name", ["H200-SXM", "H100-PCIe", "L40S"])
@pytest.mark.parametrize(
    ("fraction", "throughput", "energy"),
    [(0.7, (0.89, 0.97), (0.79, 0.90)), (0.6, (0.78, 0.86), (0.76, 0.84))],
)
def test_newer_types_follow_zeus_at_the_same_fraction(
    name: str, fraction: float, throughput: tuple[float, float], energy: tuple[float, float]
) -> None:
    spec = get_spec(name)
    rel_throughput, rel_energy = _relative(name, fraction * spec.tdp_w)
    assert throughput[0] <= rel_throughput <= throughput[1]
    assert energy[0] <= rel_energy <= energy[1]


def test_unknown_type_gets_a_scaled_static_power() -> None:
    spec = spec_from_reported("NVIDIA Future GPU", 300, 900, 900, [2100, 300], 196608)
    assert spec.static_power_w is not None
    assert spec.idle_power_w <= spec.static_power_w <= STATIC_FRACTION_OF_MIN_CAP * 300
    point = operating_point(spec, TRAIN, 300)
    assert point.power_w <= 300 and point.throughput > 0


def test_reported_limits_keep_the_catalog_static_power() -> None:
    spec = spec_for_inventory("H100-SXM", 200, 650, 650, [210, 1980], 0)
    assert spec.static_power_w == get_spec("H100-SXM").static_power_w
    base = operating_point(spec, TRAIN, 650)
    assert base.power_w == pytest.approx(physics.LOAD_FRAC * 650)


def test_spec_without_a_static_figure_gets_a_prior() -> None:
    spec = replace(get_spec("A40"), static_power_w=None)
    assert spec.load_static_power_w == pytest.approx(0.15 * spec.tdp_w)
    assert operating_point(spec, TRAIN, spec.max_power_limit_w).power_w > 0
