"""CPU-bound jobs: when a job's simulated GPUs start (or stop) waiting for the CPU, say so.

A shard on a simulated GPU runs its real work on this machine's CPU, paced so that it goes
no faster than its simulated GPU would (:mod:`greenllm.pacing`). When the CPU cannot keep
that pace, the shard reports the share of the time its simulated GPU waited; the job's
figure is :func:`scheduler.shell.jobs.wait_fraction`. A job whose figure rises above
:data:`~greenllm.pacing.CPU_BOUND_WAIT_FRACTION` gets a ``cpu_bound`` event (its rate and
J/unit are then this machine's, not its simulated GPUs'), and another when it falls below
half of that again (hysteresis, so a figure near the threshold does not flap).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from greenllm.pacing import CPU_BOUND_WAIT_FRACTION
from scheduler.shell.jobs import wait_fraction
from scheduler.shell.ports import StoredEvent

if TYPE_CHECKING:
    from scheduler.shell.controller import ControllerShell

#: A CPU-bound job is no longer CPU-bound once its wait fraction falls below this.
CLEAR_BELOW = CPU_BOUND_WAIT_FRACTION / 2
#: The event's kind.
EVENT = "cpu_bound"


def note_cpu_bound(shell: ControllerShell) -> None:
    """Record a ``cpu_bound`` event for every active job that started or stopped being
    CPU-bound since the last call (its :attr:`JobRecord.cpu_bound` follows)."""
    for job in shell.jobs.busy():
        wait = wait_fraction(shell.nodes, job)
        if wait is None:
            continue
        if job.cpu_bound:
            if wait >= CLEAR_BELOW:
                continue
            text = (
                f"job {job.job_id} is no longer CPU-bound: its simulated GPUs waited "
                f"{wait:.0%} of the time"
            )
        else:
            if wait <= CPU_BOUND_WAIT_FRACTION:
                continue
            text = (
                f"job {job.job_id} is CPU-bound: its simulated GPUs waited {wait:.0%} of the "
                "time for this machine's CPU, so its rate and J/unit are the CPU's, not the "
                "simulated GPUs'"
            )
        job.cpu_bound = not job.cpu_bound
        shell.persist.event(
            StoredEvent(shell.wall_clock(), job.job_id, EVENT, text, "job", job.job_id)
        )
