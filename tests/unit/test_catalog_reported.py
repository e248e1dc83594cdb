"""Item 3: GPUs described by what they report; the catalog is only the physics prior."""

from __future__ import annotations

import itertools

import pytest
from test_nvml import FakeDevice, Patched, fake_nvml  # noqa: F401 - fixtures

from greenllm.devices import physics
from greenllm.devices.catalog import (
    CATALOG,
    NVML_NAME_PATTERNS,
    ORIGIN_CATALOG_REPORTED,
    ORIGIN_REPORTED,
    catalog_type_for_nvml_name,
    get_spec,
    spec_for_inventory,
    spec_from_reported,
)
from greenllm.devices.nvml import NVMLGPU
from greenllm.devices.physics import Workload, operating_point
from workers.agent import devices

# type: (NVML name, max = default limit W, min limit W, max SM MHz)
NEW_TYPES = {
    "H200-SXM": ("NVIDIA H200", 700, 200, 1980),
    "H100-PCIe": ("NVIDIA H100 PCIe", 350, 200, 1755),
    "L40S": ("NVIDIA L40S", 350, 100, 2520),
    "B200": ("NVIDIA B200", 1000, 200, 1965),
}


@pytest.mark.parametrize("name", NEW_TYPES)
def test_new_types_are_in_the_catalog_with_their_nvml_names(name: str) -> None:
    nvml_name, max_w, min_w, max_mhz = NEW_TYPES[name]
    spec = get_spec(name)
    assert catalog_type_for_nvml_name(nvml_name) == name
    assert (spec.max_power_limit_w, spec.min_power_limit_w, spec.max_sm_clock_mhz) == (
        max_w,
        min_w,
        max_mhz,
    )
    assert spec.boot_power_limit_w == max_w
    assert 0 < spec.idle_power_w < spec.min_power_limit_w
    clocks = spec.supported_sm_clocks_mhz()
    assert clocks[-1] == max_mhz
    assert {b - a for a, b in itertools.pairwise(clocks)} == {15}


@pytest.mark.parametrize("name", NEW_TYPES)
def test_new_types_behave_like_the_calibrated_ones(name: str) -> None:
    spec = get_spec(name)
    train = Workload("train")
    uncapped = operating_point(spec, train, spec.max_power_limit_w)
    assert 0.80 * spec.tdp_w <= uncapped.power_w <= 0.92 * spec.tdp_w
    capped = operating_point(spec, train, 0.7 * spec.max_power_limit_w)
    assert 0.89 <= capped.throughput / uncapped.throughput <= 0.97


def test_every_catalog_type_maps_back_from_some_nvml_name() -> None:
    assert set(CATALOG) <= {gpu_type for _, gpu_type in NVML_NAME_PATTERNS}


def test_unknown_gpu_gets_a_prior_scaled_from_its_reported_range() -> None:
    spec = spec_from_reported(
        "NVIDIA Future GPU", 300, 900, 900, list(range(2100, 299, -15)), 196608
    )
    assert spec.origin == ORIGIN_REPORTED and spec.name == "NVIDIA Future GPU"
    assert (spec.min_power_limit_w, spec.max_power_limit_w, spec.boot_power_limit_w) == (
        300,
        900,
        900,
    )
    assert (spec.min_sm_clock_mhz, spec.max_sm_clock_mhz, spec.sm_clock_step_mhz) == (300, 2100, 15)
    assert spec.memory_mib == 196608
    assert 0 < spec.idle_power_w < spec.min_power_limit_w
    h100 = get_spec("H100-SXM")
    assert spec.peak_tflops == pytest.approx(h100.peak_tflops * 900 / 700)
    # The physical model runs on it and stays inside the reported range.
    point = physics.operating_point(spec, Workload("train"), 300)
    assert point.power_w <= 300 and point.throughput > 0


def test_unknown_gpu_without_clocks_still_gets_a_spec() -> None:
    spec = spec_from_reported("NVIDIA Mystery", 100, 200, 150, [], 0)
    assert spec.min_sm_clock_mhz < spec.max_sm_clock_mhz
    assert spec.default_power_limit_w == 150 and spec.memory_mib > 0


@pytest.mark.parametrize(
    ("min_w", "max_w", "default_w", "match"),
    [(0, 900, 900, "empty"), (900, 300, 300, "empty"), (300, 900, 950, "outside")],
)
def test_nonsense_reports_are_refused(
    min_w: float, max_w: float, default_w: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        spec_from_reported("NVIDIA Future GPU", min_w, max_w, default_w, [], 0)


def test_catalog_type_keeps_its_prior_but_plans_with_the_reported_range() -> None:
    # An H200 whose firmware refuses limits below 250 W (the catalog says 200 W).
    spec = spec_for_inventory("H200-SXM", 250, 700, 700, [345, 1980], 143771)
    assert spec.origin == ORIGIN_CATALOG_REPORTED
    assert (spec.min_power_limit_w, spec.max_power_limit_w) == (250, 700)
    assert spec.min_sm_clock_mhz == 345 and spec.max_sm_clock_mhz == 1980
    assert spec.peak_tflops == get_spec("H200-SXM").peak_tflops  # the prior stays
    assert spec_for_inventory("H200-SXM", 200, 700, 700, [], 0).memory_mib == 143771


def test_fake_nvml_inventory_of_an_h200_and_an_unknown_gpu(fake_nvml: Patched) -> None:  # noqa: F811
    fake_nvml.fake.devices = [
        FakeDevice(name="NVIDIA H200", uuid="GPU-h200"),
        FakeDevice(
            name="NVIDIA Future GPU",
            uuid="GPU-future",
            limit_mw=900_000,
            min_limit_mw=300_000,
            max_limit_mw=900_000,
            default_limit_mw=900_000,
        ),
    ]
    gpus = [NVMLGPU(i, power_poll_interval_s=None) for i in range(2)]
    try:
        infos = devices.inventory(gpus)
    finally:
        for g in gpus:
            g.close()
    assert [(i.type, i.uuid) for i in infos] == [
        ("H200-SXM", "GPU-h200"),
        ("NVIDIA Future GPU", "GPU-future"),
    ]
    specs = [
        spec_for_inventory(
            i.type,
            i.min_power_limit_w,
            i.max_power_limit_w,
            i.default_power_limit_w,
            [i.min_sm_clock_mhz, i.max_sm_clock_mhz],
            i.memory_total_mib,
        )
        for i in infos
    ]
    assert [(s.origin, s.min_power_limit_w, s.max_power_limit_w) for s in specs] == [
        (ORIGIN_CATALOG_REPORTED, 200, 700),
        (ORIGIN_REPORTED, 300, 900),
    ]
