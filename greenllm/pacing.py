"""Absolute pacing: work done on the CPU for a simulated GPU takes as long as that GPU would.

With no NVIDIA GPU a shard (or a rank of a user's training script) does its real work on
the CPU, and the simulated GPU it runs on sets the pace: a step of ``units`` of work lasts
at least

    target_s = units / sim_throughput_now

wall seconds, where ``sim_throughput_now`` is what the simulated GPU does at its power limit
and clocks now, in the workload's own units per second (samples/s, prompt or output
tokens/s). A :class:`Pacer` waits out the rest of the target after the real step; the
throughput is read again slice by slice while it waits, so a limit changed in the middle of
a step takes effect at once (the step's remaining work proceeds at the new rate). Waits too
short to sleep are carried to the next step, and so are late wake-ups, so the long-run rate
stays exact even for steps of a millisecond.

When the real step already took longer than its target, the CPU (or, for a training rank, a
slower peer at the gradient exchange) set the pace, not the simulated GPU: the pacer does
not wait, and counts the simulated GPU as busy only for the target time. The rest of the
step it waited, drawing idle power (:meth:`SimulatedGPU.set_busy_fraction`).
:meth:`Pacer.wait_fraction` is that waiting as a fraction of the recent steps' time; above
:data:`CPU_BOUND_WAIT_FRACTION` the shard says it is CPU-bound (see
``docs/simulated-gpus.md``).

Nothing here imports torch or the cluster: the training-script API
(:func:`greenllm.job.report`) and the workers' shards share it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

#: Longest single wait before the throughput is read again, seconds.
MAX_SLICE_S = 0.05
#: Throughput below which the simulated GPU counts as doing nothing (idle), units/s.
MIN_RATE = 1e-9
#: Shortest wait worth a sleep, seconds; shorter ones are carried to the next step.
MIN_WAIT_S = 0.002
#: The recent steps the wait fraction is taken over, seconds of step time.
WAIT_WINDOW_S = 10.0
#: Above this wait fraction a paced shard reports itself CPU-bound.
CPU_BOUND_WAIT_FRACTION = 0.10


class WaitWindow:
    """Busy and total seconds of the recent paced steps (a sliding window).

    Args:
        window_s: Seconds of step time kept, counted back from the latest step's end.
    """

    def __init__(self, window_s: float = WAIT_WINDOW_S) -> None:
        self.window_s = window_s
        self._steps: deque[tuple[float, float, float]] = deque()  # (end, span, busy)
        self._span_s = 0.0
        self._busy_s = 0.0

    def add(self, end_s: float, span_s: float, busy_s: float) -> None:
        """A step that ended at ``end_s`` and lasted ``span_s``, of which the simulated GPU
        worked ``busy_s`` (seconds)."""
        if span_s <= 0:
            return
        busy_s = min(max(0.0, busy_s), span_s)
        self._steps.append((end_s, span_s, busy_s))
        self._span_s += span_s
        self._busy_s += busy_s
        while len(self._steps) > 1 and self._steps[0][0] < end_s - self.window_s:
            _, span, busy = self._steps.popleft()
            self._span_s -= span
            self._busy_s -= busy

    def wait_fraction(self) -> float | None:
        """Share of the window's time the simulated GPU waited, 0 to 1 (None: no step)."""
        if not self._steps or self._span_s <= 0:
            return None
        return min(1.0, max(0.0, 1.0 - self._busy_s / self._span_s))


class Pacer:
    """Stretches each real step of CPU work to the time its simulated GPU would take.

    Args:
        sim_throughput: Returns the simulated GPU's throughput now, units/s (for a
            :class:`~greenllm.devices.simulated.SimulatedGPU`, its ``throughput`` method).
        clock: Returns the time, seconds (``time.monotonic`` by default).
        sleep: Waits the given seconds; by default waits on ``stop_event``, so stopping
            the shard cuts a wait short.
        stop_event: When set, :meth:`pace` returns at once.
        max_slice_s: Longest single wait before the throughput is read again, seconds.
        min_wait_s: Shortest wait worth a sleep, seconds.
        window_s: The recent step time the wait fraction is taken over, seconds.
        cpu_bound_above: Wait fraction above which :meth:`cpu_bound` is true.
    """

    def __init__(
        self,
        sim_throughput: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        stop_event: threading.Event | None = None,
        max_slice_s: float = MAX_SLICE_S,
        min_wait_s: float = MIN_WAIT_S,
        window_s: float = WAIT_WINDOW_S,
        cpu_bound_above: float = CPU_BOUND_WAIT_FRACTION,
    ) -> None:
        self._sim_throughput = sim_throughput
        self._clock = clock
        self._stop = stop_event or threading.Event()
        self._sleep = sleep or self._stop.wait
        self._max_slice_s = max_slice_s
        self._min_wait_s = min_wait_s
        self._cpu_bound_above = cpu_bound_above
        self._carry_s = 0.0  # GPU seconds owed (> 0) or done ahead (< 0)
        self.window = WaitWindow(window_s)
        #: Totals since creation: units paced, seconds of steps (real step plus wait),
        #: seconds the simulated GPU worked, seconds waited.
        self.units = 0.0
        self.span_s = 0.0
        self.busy_s = 0.0
        self.waited_s = 0.0

    def throughput(self) -> float:
        """The simulated GPU's throughput now, units/s (0 when not finite or negative)."""
        rate = float(self._sim_throughput())
        return rate if math.isfinite(rate) and rate > 0 else 0.0

    def clock(self) -> float:
        """The pacer's time, seconds (time real steps with it)."""
        return self._clock()

    def pace(self, units: float, step_s: float) -> float:
        """Wait after a real step of ``units`` of work that took ``step_s`` seconds.

        While the real step ran, the simulated GPU worked through the step's units at the
        throughput read now; whatever is left is then waited out at the throughput read
        slice by slice. A step that took longer than its target waits nothing: the
        simulated GPU was busy for the target only.

        Args:
            units: Work in the step, units (the workload's unit: samples or tokens).
            step_s: Wall seconds the real step took (for a training rank: since its
                previous report, time blocked at the gradient exchange included).

        Returns:
            Seconds waited.
        """
        start_s = self._clock()
        step_s = max(0.0, step_s)
        rate = self.throughput()
        # The carry is GPU seconds: units of the previous step's workload (prompt tokens of
        # a prefill, say) are not units of this one (output tokens of a decode).
        owed = max(0.0, units) + (self._carry_s * rate if rate >= MIN_RATE else 0.0)
        if rate < MIN_RATE:  # no work can progress: the GPU, not the CPU, holds it up
            left, busy_s = owed, step_s
        else:
            left = owed - step_s * rate
            busy_s = step_s if left > 0 else min(step_s, max(0.0, units) / rate)
        overslept = False
        while left > 0 and not self._stop.is_set():
            rate = self.throughput()
            if rate < MIN_RATE:
                before_s = self._clock()
                self._sleep(self._max_slice_s)
                busy_s += self._clock() - before_s
                continue
            wait_s = left / rate
            if wait_s < self._min_wait_s:
                break
            before_s = self._clock()
            self._sleep(min(self._max_slice_s, wait_s))
            slept_s = self._clock() - before_s
            left -= slept_s * rate
            busy_s += slept_s
            overslept = left < 0
        rate_now = self.throughput()
        left_s = left / rate_now if rate_now >= MIN_RATE else 0.0
        if left > 0:
            self._carry_s = left_s  # a rest too short to sleep: next step's
        elif overslept:  # a late wake-up: the next step has that much done already
            self._carry_s = max(left_s, -self._max_slice_s)
        elif units - step_s * rate >= 0:  # no wait, credit from a late wake-up paid it
            self._carry_s = min(0.0, left_s)
        else:  # CPU-bound: behind the GPU's schedule already, no credit is kept or earned
            self._carry_s = 0.0
        end_s = self._clock()
        waited_s = end_s - start_s
        span_s = step_s + waited_s
        busy_s = min(busy_s, span_s)
        self.window.add(end_s, span_s, busy_s)
        self.units += max(0.0, units)
        self.span_s += span_s
        self.busy_s += busy_s
        self.waited_s += waited_s
        return waited_s

    def wait_fraction(self) -> float | None:
        """Share of the recent steps' time the simulated GPU waited for the CPU, 0 to 1
        (None before the first step)."""
        return self.window.wait_fraction()

    def busy_fraction(self) -> float:
        """Share of the recent steps' time the simulated GPU worked, 0 to 1 (1 before the
        first step)."""
        wait = self.wait_fraction()
        return 1.0 if wait is None else 1.0 - wait

    def cpu_bound(self) -> bool:
        """Whether the recent steps waited more than ``cpu_bound_above`` of their time."""
        wait = self.wait_fraction()
        return wait is not None and wait > self._cpu_bound_above

    def rate_per_s(self) -> float:
        """Mean paced rate so far, units/s (0 before the first step)."""
        return self.units / self.span_s if self.span_s > 0 else 0.0
