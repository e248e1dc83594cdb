"""Pacing a CPU shard by its simulated GPU: the absolute pacer lives in
:mod:`greenllm.pacing` (shared with :func:`greenllm.job.report`); this module gives the
workers' shards a pacer that follows a :class:`SimulatedGPU` and keeps the GPU's busy
fraction (so its power and energy) in step with what the pacer measured.

See ``docs/simulated-gpus.md`` for the design.
"""

from __future__ import annotations

import threading

from greenllm.devices import physics
from greenllm.devices.simulated import SimulatedGPU
from greenllm.pacing import CPU_BOUND_WAIT_FRACTION, Pacer, WaitWindow

__all__ = [
    "CPU_BOUND_WAIT_FRACTION",
    "Pacer",
    "WaitWindow",
    "for_gpu",
    "sync_busy_fraction",
]

#: A busy-fraction change smaller than this is not applied to the GPU.
BUSY_EPS = 0.005


def for_gpu(
    gpu: SimulatedGPU, workload: physics.Workload, stop_event: threading.Event | None = None
) -> Pacer:
    """A pacer following ``gpu``'s throughput, the GPU set to run ``workload`` if idle."""
    if gpu.workload is None:
        gpu.set_workload(workload)
    return Pacer(gpu.throughput, stop_event=stop_event)


def sync_busy_fraction(gpu: SimulatedGPU, pacer: Pacer) -> None:
    """Set ``gpu``'s busy fraction to what ``pacer`` measured over its recent steps."""
    busy = pacer.busy_fraction()
    if abs(busy - gpu.busy_fraction) > BUSY_EPS or (busy == 1.0 and gpu.busy_fraction != 1.0):
        gpu.set_busy_fraction(busy)
