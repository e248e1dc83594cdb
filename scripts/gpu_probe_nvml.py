"""NVML measurements for scripts/gpu_probe.py, all read-only (see its docstring)."""

from __future__ import annotations

import contextlib
import itertools
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pynvml

from greenllm.devices.nvml_power import FI_DEV_POWER_INSTANT, read_field

SHORT_WINDOWS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


#: A word in an NVML function's name that means it may change something.
_CHANGES = re.compile(
    r"(Set|Reset|Clear|Create|Destroy|Modify|Remove|Discover|Register|Freeze|Issue)(?=[A-Z]|$)"
)


def forbid_setters(module: Any = pynvml) -> list[str]:
    """Replace every NVML function that may change a GPU (power limit, clocks, persistence,
    MIG, ECC, resets, ...) by one that raises, so the probe cannot change anything.

    Returns:
        The names replaced.
    """

    def refuse(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"gpu_probe is read-only: refused to call {name}")

        return call

    names = [n for n in dir(module) if n.startswith("nvml") and _CHANGES.search(n[4:])]
    for name in names:
        if callable(getattr(module, name)):
            setattr(module, name, refuse(name))
    return names


def try_read(fn: Callable[[], Any]) -> Any:
    """``fn()`` (bytes decoded), or ``"error: ..."`` when it raises."""
    try:
        value = fn()
    except Exception as err:  # a probe reports what fails, it does not stop
        return f"error: {err}"
    return value.decode() if isinstance(value, bytes) else value


def stats(values: list[float]) -> dict[str, float] | None:
    """min / p10 / median / p90 / max / mean of ``values`` (None when empty)."""
    if not values:
        return None
    s = sorted(values)

    def pct(p: float) -> float:
        return s[min(len(s) - 1, int(p * (len(s) - 1) + 0.5))]

    return {
        "n": len(s),
        "min": s[0],
        "p10": pct(0.1),
        "median": statistics.median(s),
        "p90": pct(0.9),
        "max": s[-1],
        "mean": statistics.fmean(s),
    }


def counter_period(handle: Any, duration_s: float) -> dict[str, Any]:
    """How often the raw energy counter changes: intervals between changes, ms."""
    read = pynvml.nvmlDeviceGetTotalEnergyConsumption
    last, changes, reads = read(handle), [], 0
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < duration_s:
        value = read(handle)
        reads += 1
        if value != last:
            changes.append((now, value - last))
            last = value
        time.sleep(0.0002)
    periods = [1000 * (b[0] - a[0]) for a, b in itertools.pairwise(changes)]
    return {
        "reads": reads,
        "updates": len(changes),
        "period_ms": stats(periods),
        "step_mj": stats([float(d) for _, d in changes]),
    }


def power_readers(handle: Any) -> dict[str, Callable[[], float]]:
    """Readers of the instant power field and the averaged power, watts."""

    def instant() -> float:
        return read_field(handle, FI_DEV_POWER_INSTANT) / 1000

    return {
        "instant_w": instant,
        "average_w": lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000,
    }


def power_window(handle: Any, duration_s: float, every_s: float = 0.02) -> dict[str, Any]:
    """Counter-derived power over the window, and the mean of each live reading."""
    readers = power_readers(handle)
    samples: dict[str, list[float]] = {k: [] for k in readers}
    e0, t0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle), time.perf_counter()
    while time.perf_counter() - t0 < duration_s:
        for key, read in readers.items():
            with contextlib.suppress(pynvml.NVMLError):
                samples[key].append(read())
        time.sleep(every_s)
    e1, t1 = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle), time.perf_counter()
    out: dict[str, Any] = {"counter_w": (e1 - e0) / 1000 / (t1 - t0), "duration_s": t1 - t0}
    out.update({k: stats(v) for k, v in samples.items()})
    return out


def nvidia_smi(nvml_index: int) -> dict[str, Any]:
    """``nvidia-smi --query-gpu=power.draw[...]`` for the GPU (the newer fields if known)."""
    failure = ""
    for fields in ("power.draw,power.draw.average,power.draw.instant", "power.draw"):
        cmd = ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"]
        try:
            done = subprocess.run(
                [*cmd, "-i", str(nvml_index)], capture_output=True, text=True, timeout=15
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            return {"error": str(err)}
        if done.returncode == 0:
            values = [v.strip() for v in done.stdout.strip().split(",")]
            return dict(zip(fields.split(","), values, strict=False))
        failure = done.stderr.strip() or done.stdout.strip()
    return {"error": failure}


def short_windows(
    handle: Any,
    reference_w: float,
    repeats: int = 20,
    windows_s: tuple[float, ...] = SHORT_WINDOWS_S,
) -> dict[str, Any]:
    """Energy over windows of 5-200 ms against ``reference_w`` x the window's length."""
    read = pynvml.nvmlDeviceGetTotalEnergyConsumption
    out = {}
    for window_s in windows_s:
        ratios, zeros = [], 0
        for _ in range(repeats):
            e0, t0 = read(handle), time.perf_counter()
            while time.perf_counter() - t0 < window_s:
                pass
            e1, t1 = read(handle), time.perf_counter()
            joules = (e1 - e0) / 1000
            zeros += joules == 0
            if reference_w > 0:
                ratios.append(joules / (reference_w * (t1 - t0)))
        out[f"{window_s * 1000:g}ms"] = {"zero_fraction": zeros / repeats, "ratio": stats(ratios)}
    return out


def decay(handle: Any, duration_s: float = 3.0, every_s: float = 0.05) -> list[dict[str, Any]]:
    """Instant and averaged power every ``every_s`` after the load stopped."""
    readers, rows, t0 = power_readers(handle), [], time.perf_counter()
    while (t := time.perf_counter() - t0) < duration_s:
        rows.append({"t_s": round(t, 3), **{k: try_read(r) for k, r in readers.items()}})
        time.sleep(every_s)
    return rows
