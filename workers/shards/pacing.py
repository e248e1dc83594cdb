"""Pacing a CPU shard by its simulated GPU, so power limits and clocks change real speed.

With no GPU a shard runs its real work (training steps, decode steps) on the CPU. A
:class:`Pacer` then stretches every step so the shard's rate is

    rate = cpu_capacity * (sim_throughput_now / reference_throughput)

where ``cpu_capacity`` is the rate the CPU just reached on that step (units / seconds it
took), ``sim_throughput_now`` is what the shard's simulated GPU does at its current power
limit and clocks, and ``reference_throughput`` is the **same workload, uncapped, at maximum
clock on the reference type** (:data:`REFERENCE_TYPE`, :func:`reference_throughput`). So a
CPU shard stands for that GPU running flat out; every slower type and every cap
or clock lock slows it by exactly the ratio the physical model gives. The ratio is at most
1, so pacing only ever adds waiting, never speeds the CPU up.

The ratio is re-read while waiting (in slices of ``max_slice_s``), so a limit changed in
the middle of a step takes effect at once: the step's remaining work proceeds at the new
rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from greenllm.devices import physics
from greenllm.devices.catalog import CATALOG
from greenllm.devices.simulated import SimulatedGPU

#: Longest single wait before the ratio is read again, seconds.
MAX_SLICE_S = 0.05
#: Ratio below which a GPU counts as doing no work (idle): the pacer waits, slice by slice.
MIN_RATIO = 1e-9
#: Shortest wait worth a sleep, seconds; shorter ones are carried to the next step.
MIN_WAIT_S = 0.002


#: The type a CPU shard stands for, running flat out (a faster type also runs at the CPU's
#: pace: pacing only ever slows a shard down).
REFERENCE_TYPE = "H100-SXM"


def reference_throughput(workload: physics.Workload) -> float:
    """The rate a CPU shard stands for: ``workload`` uncapped on :data:`REFERENCE_TYPE`.

    Returns:
        Units per second (samples/s for training, tokens/s otherwise).
    """
    return physics.peak_throughput(CATALOG[REFERENCE_TYPE], workload)


class Pacer:
    """Stretches each real step of a CPU shard to the pace of its simulated GPU.

    Args:
        sim_throughput: Returns the simulated GPU's throughput now, units/s (for a
            :class:`SimulatedGPU`, its ``throughput`` method).
        reference_throughput_per_s: The throughput that means "full CPU speed", units/s
            (see :func:`reference_throughput`).
        clock: Returns the time, seconds (``time.monotonic`` by default).
        sleep: Waits the given seconds; by default waits on ``stop_event``, so stopping
            the shard cuts a wait short.
        stop_event: When set, :meth:`pace` returns at once.
        max_slice_s: Longest single wait before the ratio is read again, seconds.
        min_wait_s: Shortest wait worth a sleep, seconds.

    Raises:
        ValueError: ``reference_throughput_per_s`` is not positive.
    """

    def __init__(
        self,
        sim_throughput: Callable[[], float],
        reference_throughput_per_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        stop_event: threading.Event | None = None,
        max_slice_s: float = MAX_SLICE_S,
        min_wait_s: float = MIN_WAIT_S,
    ) -> None:
        if reference_throughput_per_s <= 0:
            raise ValueError("reference throughput must be positive")
        self._sim_throughput = sim_throughput
        self.reference_throughput_per_s = reference_throughput_per_s
        self._clock = clock
        self._stop = stop_event or threading.Event()
        self._sleep = sleep or self._stop.wait
        self._max_slice_s = max_slice_s
        self._min_wait_s = min_wait_s
        self._owed_s = 0.0
        self.cpu_s = 0.0
        self.paced_s = 0.0
        self.units = 0.0

    @classmethod
    def for_gpu(
        cls,
        gpu: SimulatedGPU,
        workload: physics.Workload,
        stop_event: threading.Event | None = None,
    ) -> Pacer:
        """A pacer following ``gpu``, which is set to run ``workload`` if it is idle."""
        if gpu.workload is None:
            gpu.set_workload(workload)
        return cls(gpu.throughput, reference_throughput(workload), stop_event=stop_event)

    def ratio(self) -> float:
        """Simulated throughput now over the reference (0 to 1 for catalog GPUs)."""
        return self._sim_throughput() / self.reference_throughput_per_s

    def clock(self) -> float:
        """The pacer's time, seconds (time real steps with it)."""
        return self._clock()

    def pace(self, units: float, step_s: float) -> float:
        """Wait after a real step of ``units`` that took ``step_s`` seconds on the CPU.

        The step counts as ``step_s`` of work at full speed; while it ran it progressed at
        the ratio read now, and it then finishes at the ratio read slice by slice. Waits
        shorter than ``min_wait_s`` are carried to the next step, and so is a wait that
        overran (a thread wakes late), so the long-run rate stays exact even for steps
        of a few milliseconds.

        Returns:
            Seconds waited.
        """
        start_s = self._clock()
        self._owed_s += step_s * (1.0 - min(1.0, self.ratio()))
        while not self._stop.is_set():
            ratio = min(1.0, self.ratio())
            if ratio < MIN_RATIO:
                self._sleep(self._max_slice_s)
                continue
            # At ``ratio``, full-speed work owed_s takes owed_s / ratio wall seconds.
            wait_s = self._owed_s / ratio
            if wait_s < self._min_wait_s:
                break
            before_s = self._clock()
            self._sleep(min(self._max_slice_s, wait_s))
            self._owed_s -= (self._clock() - before_s) * ratio
        self._owed_s = max(self._owed_s, -self._max_slice_s)
        waited_s = self._clock() - start_s
        self.cpu_s += step_s
        self.paced_s += step_s + waited_s
        self.units += units
        return waited_s

    def cpu_capacity_per_s(self) -> float:
        """Mean unpaced CPU rate so far, units/s (0 before the first step)."""
        return self.units / self.cpu_s if self.cpu_s > 0 else 0.0

    def paced_rate_per_s(self) -> float:
        """Mean paced rate so far, units/s (0 before the first step)."""
        return self.units / self.paced_s if self.paced_s > 0 else 0.0
