"""Throughput and power of a workload on a GPU type, against power limit or SM clock.

The prior comes from the calibrated physics in :mod:`greenllm.devices.physics` (what
``greenllm profile`` measures on the simulated backend). Telemetry refines it: each
observation (measured work/s and watts at the limit and clock lock actually in force) is
turned into a ratio to the prior at those settings and stored in a bin of its setting.
Curves are the prior times a robust correction:

* per setting bin, the median of the last :data:`BIN_SAMPLES` ratios (outliers and noise
  barely move a median);
* bins without enough samples use the median over all bins of the pair;
* ratios are clipped to ``[RATIO_MIN, RATIO_MAX]`` and throughput is kept non-decreasing
  in the limit / clock, so one bad bin cannot invert the curve.

Delay: the controller must only feed samples taken once the settings had been in force
for a settling time (it knows when a command was acked); :meth:`PowerModel.observe`
takes the settings the sample was measured under, not the ones commanded since.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from greenllm.devices import physics
from greenllm.devices.catalog import GPUSpec, get_spec

#: Ratios kept per setting bin.
BIN_SAMPLES = 32
#: Samples a bin needs before its own median is used.
MIN_BIN_SAMPLES = 3
#: Bounds of a correction ratio to the prior.
RATIO_MIN = 0.25
RATIO_MAX = 4.0
#: Width of a power-limit bin as a fraction of the type's limit range.
LIMIT_BIN_FRAC = 1.0 / 32.0


@dataclass(frozen=True)
class Curve:
    """Operating points of one workload on one GPU type, per setting.

    Attributes:
        limits_w: Power limit of each point, watts (ascending).
        sm_clock_mhz: SM clock the GPU settles at, MHz.
        rate: Work per second per GPU (samples/s or tokens/s).
        power_w: Board power drawn, watts (the mean, for a mix of phases).
        peak_power_w: For a mix of phases, the power of the hungriest one, watts: a limit
            below it slows that phase (None: ``power_w``).
    """

    limits_w: np.ndarray
    sm_clock_mhz: np.ndarray
    rate: np.ndarray
    power_w: np.ndarray
    peak_power_w: np.ndarray | None = None

    @property
    def limit_power_w(self) -> np.ndarray:
        """The power a limit must allow at each point to hold its rate, watts."""
        return self.power_w if self.peak_power_w is None else self.peak_power_w


class _Ratios:
    """Correction ratios of one (type, workload, setting kind), binned by setting."""

    def __init__(self) -> None:
        self.bins: dict[int, deque[tuple[float, float]]] = {}
        self.version = 0

    def add(self, bin_key: int, rate_ratio: float, power_ratio: float) -> None:
        self.bins.setdefault(bin_key, deque(maxlen=BIN_SAMPLES)).append((rate_ratio, power_ratio))
        self.version += 1

    def correction(self, bin_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rate and power ratios for each bin key (1 where nothing is known)."""
        every = [s for samples in self.bins.values() for s in samples]
        if len(every) >= MIN_BIN_SAMPLES:
            arr = np.asarray(every)
            default = np.median(arr, axis=0)
        else:
            default = np.ones(2)
        medians = {
            k: np.median(np.asarray(v), axis=0)
            for k, v in self.bins.items()
            if len(v) >= MIN_BIN_SAMPLES
        }
        out = np.tile(default, (len(bin_keys), 1))
        for i, k in enumerate(bin_keys.tolist()):
            if k in medians:
                out[i] = medians[k]
        out = np.clip(out, RATIO_MIN, RATIO_MAX)
        return out[:, 0], out[:, 1]


def _limit_bin(spec: GPUSpec, limit_w: float | np.ndarray) -> np.ndarray:
    span = spec.max_power_limit_w - spec.min_power_limit_w
    width = max(1.0, span * LIMIT_BIN_FRAC)
    return np.floor((np.asarray(limit_w, dtype=float) - spec.min_power_limit_w) / width).astype(int)


class PowerModel:
    """Per (GPU type, workload) curves: the catalog prior, corrected from telemetry."""

    def __init__(self) -> None:
        self._prior_cache: dict[tuple[str, physics.Workload, bytes], Curve] = {}
        self._clock_cache: dict[tuple[str, physics.Workload], Curve] = {}
        self._limit_ratios: dict[tuple[str, physics.Workload], _Ratios] = {}
        self._clock_ratios: dict[tuple[str, physics.Workload], _Ratios] = {}
        self._learned: dict[tuple[str, physics.Workload, bytes | None], tuple[int, Curve]] = {}
        self.version = 0

    # -- prior ----------------------------------------------------------------------------
    def prior_limit_curve(
        self, gpu_type: str, workload: physics.Workload, limits_w: np.ndarray
    ) -> Curve:
        """The physics prior at each power limit (no clock lock)."""
        key = (gpu_type, workload, np.asarray(limits_w, dtype=float).tobytes())
        curve = self._prior_cache.get(key)
        if curve is None:
            spec = get_spec(gpu_type)
            points = [physics.operating_point(spec, workload, float(p)) for p in limits_w]
            curve = Curve(
                limits_w=np.asarray(limits_w, dtype=float),
                sm_clock_mhz=np.array([p.sm_clock_mhz for p in points], dtype=float),
                rate=np.array([p.throughput for p in points]),
                power_w=np.array([p.power_w for p in points]),
            )
            self._prior_cache[key] = curve
        return curve

    def prior_clock_curve(self, gpu_type: str, workload: physics.Workload) -> Curve:
        """The physics prior at each supported SM clock, with the limit each one needs."""
        key = (gpu_type, workload)
        curve = self._clock_cache.get(key)
        if curve is None:
            spec = get_spec(gpu_type)
            clocks = np.asarray(spec.supported_sm_clocks_mhz(), dtype=float)
            power = np.array([physics.power_w(spec, workload, c) for c in clocks])
            rate = np.array([physics.throughput(spec, workload, c) for c in clocks])
            limits = np.clip(np.ceil(power), spec.min_power_limit_w, spec.max_power_limit_w)
            curve = Curve(limits_w=limits, sm_clock_mhz=clocks, rate=rate, power_w=power)
            self._clock_cache[key] = curve
        return curve

    # -- learned ----------------------------------------------------------------------------
    def limit_curve(self, gpu_type: str, workload: physics.Workload, limits_w: np.ndarray) -> Curve:
        """Rate and power at each power limit: the prior times the learned correction."""
        prior = self.prior_limit_curve(gpu_type, workload, limits_w)
        ratios = self._limit_ratios.get((gpu_type, workload))
        if ratios is None:
            return prior
        key = (gpu_type, workload, prior.limits_w.tobytes())
        hit = self._learned.get(key)
        if hit is not None and hit[0] == ratios.version:
            return hit[1]
        rate_k, power_k = ratios.correction(_limit_bin(get_spec(gpu_type), prior.limits_w))
        curve = _corrected(prior, rate_k, power_k)
        self._learned[key] = (ratios.version, curve)
        return curve

    def clock_curve(self, gpu_type: str, workload: physics.Workload) -> Curve:
        """Rate and power at each locked SM clock: the prior times the learned correction."""
        prior = self.prior_clock_curve(gpu_type, workload)
        ratios = self._clock_ratios.get((gpu_type, workload))
        if ratios is None:
            return prior
        key = (gpu_type, workload, None)
        hit = self._learned.get(key)
        if hit is not None and hit[0] == ratios.version:
            return hit[1]
        rate_k, power_k = ratios.correction(prior.sm_clock_mhz.astype(int))
        spec = get_spec(gpu_type)
        curve = _corrected(prior, rate_k, power_k)
        limits = np.clip(np.ceil(curve.power_w), spec.min_power_limit_w, spec.max_power_limit_w)
        curve = Curve(limits, curve.sm_clock_mhz, curve.rate, curve.power_w)
        self._learned[key] = (ratios.version, curve)
        return curve

    def observe(
        self,
        gpu_type: str,
        workload: physics.Workload,
        power_limit_w: float,
        locked_max_sm_clock_mhz: int | None,
        power_w: float,
        work_rate: float,
    ) -> None:
        """Learn from one settled measurement.

        Args:
            gpu_type: Catalog type of the GPU.
            workload: What ran on it.
            power_limit_w: Power limit in force while measuring, watts.
            locked_max_sm_clock_mhz: Upper end of the SM clock lock in force, MHz, or None.
            power_w: Measured board power, watts.
            work_rate: Measured work per second (samples/s or tokens/s).
        """
        if not (np.isfinite(power_w) and np.isfinite(work_rate)) or power_w <= 0:
            return
        spec = get_spec(gpu_type)
        point = physics.operating_point(spec, workload, power_limit_w, locked_max_sm_clock_mhz)
        if point.throughput <= 0 or point.power_w <= 0:
            return
        rate_ratio = work_rate / point.throughput
        power_ratio = power_w / point.power_w
        key = (gpu_type, workload)
        if locked_max_sm_clock_mhz is None:
            ratios = self._limit_ratios.setdefault(key, _Ratios())
            ratios.add(int(_limit_bin(spec, power_limit_w)), rate_ratio, power_ratio)
        else:
            ratios = self._clock_ratios.setdefault(key, _Ratios())
            ratios.add(int(point.sm_clock_mhz), rate_ratio, power_ratio)
        self.version += 1


def serving_curve(decode: Curve, prefill: Curve, prompt_tokens_per_output: float) -> Curve:
    """An inference replica's curve in GPU time: output tokens per second when each costs
    its decode time plus ``prompt_tokens_per_output`` prompt tokens of prefill.

    At each setting a GPU spends ``1 / decode.rate`` seconds per output token decoding and
    ``rho / prefill.rate`` prefilling (``rho`` the prompt tokens per output token), so it
    serves ``1 / (rho / prefill.rate + 1 / decode.rate)`` output tokens per second and
    draws the time-weighted mean of the two phases' power; a limit must allow the hungrier
    phase (:attr:`Curve.peak_power_w`). Planning in output tokens of decode alone
    under-provisions a prefill-heavy load by the ratio of its prefill to its decode time.

    Args:
        decode: The decode curve (at the replica's batch).
        prefill: The prefill curve at the same settings.
        prompt_tokens_per_output: ``rho``, >= 0.

    Returns:
        The mixed curve on ``decode``'s settings (``decode`` itself when ``rho`` is 0).
    """
    rho = max(0.0, float(prompt_tokens_per_output))
    if rho == 0.0:
        return decode
    with np.errstate(divide="ignore", invalid="ignore"):
        decode_s = np.where(decode.rate > 0, 1.0 / decode.rate, np.inf)
        prefill_s = np.where(prefill.rate > 0, rho / prefill.rate, np.inf)
        per_unit_s = decode_s + prefill_s
        rate = np.where(np.isfinite(per_unit_s), 1.0 / per_unit_s, 0.0)
        power = np.where(
            np.isfinite(per_unit_s),
            (decode_s * decode.power_w + prefill_s * prefill.power_w) / per_unit_s,
            np.maximum(decode.power_w, prefill.power_w),
        )
    peak = np.maximum(decode.limit_power_w, prefill.limit_power_w)
    # a clock curve's limits are those its clocks need (a limit curve's: the same grid)
    limits = np.maximum(decode.limits_w, prefill.limits_w)
    return Curve(limits, decode.sm_clock_mhz, rate, power, peak)


def _corrected(prior: Curve, rate_k: np.ndarray, power_k: np.ndarray) -> Curve:
    rate = np.maximum.accumulate(prior.rate * rate_k)
    power = prior.power_w * power_k
    return Curve(prior.limits_w, prior.sm_clock_mhz, rate, power)
