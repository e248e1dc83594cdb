"""The power model: the prior is the physics; telemetry corrects it robustly."""

from __future__ import annotations

import numpy as np
import pytest

from greenllm.devices import physics
from greenllm.devices.catalog import get_spec
from greenllm.devices.physics import Workload
from scheduler.core.powermodel import PowerModel

TRAIN = Workload("train", batch=8, model_params=1.3e9)
GRID = np.linspace(200, 700, 11)


def test_prior_is_the_catalog_physics() -> None:
    curve = PowerModel().limit_curve("H100-SXM", TRAIN, GRID)
    spec = get_spec("H100-SXM")
    for lim, rate, power in zip(curve.limits_w, curve.rate, curve.power_w, strict=True):
        point = physics.operating_point(spec, TRAIN, float(lim))
        assert rate == pytest.approx(point.throughput)
        assert power == pytest.approx(point.power_w)
    assert np.all(np.diff(curve.rate) >= 0)


def test_learns_a_slower_job_through_noise_outliers_and_a_bad_bin() -> None:
    spec = get_spec("H100-SXM")
    truth = Workload("train", batch=8, model_params=1.6e9)  # really 23% bigger than declared
    model = PowerModel()
    rng = np.random.default_rng(0)
    for _ in range(400):
        lim = float(rng.choice(GRID))
        point = physics.operating_point(spec, truth, lim)
        power = point.power_w * (1 + 0.03 * rng.standard_normal())
        rate = point.throughput * (1 + 0.03 * rng.standard_normal())
        if rng.random() < 0.05:  # outliers: spikes and dropouts
            power, rate = power * 3, rate * 0.1
        model.observe("H100-SXM", TRAIN, lim, None, power, rate)
    curve = model.limit_curve("H100-SXM", TRAIN, GRID)
    want = np.array([physics.operating_point(spec, truth, float(x)).throughput for x in GRID])
    assert np.max(np.abs(curve.rate / want - 1)) < 0.03
    prior = model.prior_limit_curve("H100-SXM", TRAIN, GRID)
    assert np.max(np.abs(prior.rate / want - 1)) > 0.15  # the prior alone was far off


def test_unseen_settings_use_the_pooled_correction() -> None:
    model = PowerModel()
    for _ in range(5):
        model.observe(
            "A100-SXM4",
            TRAIN,
            400.0,
            None,
            300.0,
            0.5 * physics.operating_point(get_spec("A100-SXM4"), TRAIN, 400.0).throughput,
        )
    curve = model.limit_curve("A100-SXM4", TRAIN, np.array([150.0, 400.0]))
    prior = model.prior_limit_curve("A100-SXM4", TRAIN, np.array([150.0, 400.0]))
    assert curve.rate == pytest.approx(0.5 * prior.rate)


def test_garbage_is_ignored_and_clock_locks_learn_separately() -> None:
    model = PowerModel()
    model.observe("L4", TRAIN, 60.0, None, float("nan"), 1.0)
    model.observe("L4", TRAIN, 60.0, None, 0.0, 1.0)
    assert model.version == 0
    spec = get_spec("L4")
    clock = 1500
    point = physics.operating_point(spec, TRAIN, 72.0, clock)
    for _ in range(3):
        model.observe("L4", TRAIN, 72.0, clock, point.power_w * 1.1, point.throughput)
    curve = model.clock_curve("L4", TRAIN)
    k = int(np.flatnonzero(curve.sm_clock_mhz == point.sm_clock_mhz)[0])
    assert curve.power_w[k] == pytest.approx(1.1 * point.power_w)
    assert model.limit_curve("L4", TRAIN, np.array([72.0])).power_w[0] == pytest.approx(
        physics.operating_point(spec, TRAIN, 72.0).power_w
    )
