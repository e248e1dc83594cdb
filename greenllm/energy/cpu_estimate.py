"""A labelled ESTIMATE of CPU energy where RAPL cannot be read.

This is a model, not a measurement: CPU time used by this process and its waited-for
children (``os.times()``: user + system, self + children) multiplied by a per-core power.
Every output that carries it says ``source: "estimate"``.

The default per-core power is a TDP-per-core figure: the Intel Xeon Platinum 8480+
(Sapphire Rapids, the CPU of DGX H100 class servers) has a TDP of 350 W for 56 cores
(Intel ARK), i.e. 6.25 W per busy core. CodeCarbon falls back on a similar TDP-based
model when it cannot read RAPL. What the model leaves out: idle power of the package,
DRAM, turbo above TDP, cores used by processes outside the tree (e.g. Ray workers that
are not children of this process), and children that have not been waited for.
"""

from __future__ import annotations

import os
from collections.abc import Callable

#: Intel Xeon Platinum 8480+: 350 W TDP / 56 cores (Intel ARK), watts per busy core.
DEFAULT_WATTS_PER_CORE = 350.0 / 56.0


def process_tree_cpu_time_s() -> float:
    """CPU seconds used so far by this process and its terminated, waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuTimeEstimator:
    """Turns process-tree CPU time into an energy estimate.

    Args:
        watts_per_core: Power of one fully busy core, watts (> 0).
        cpu_time_s: Returns the process tree's CPU time so far, seconds (injectable for
            tests).
    """

    def __init__(
        self,
        watts_per_core: float = DEFAULT_WATTS_PER_CORE,
        cpu_time_s: Callable[[], float] = process_tree_cpu_time_s,
    ) -> None:
        if not watts_per_core > 0:
            raise ValueError(f"watts_per_core must be > 0, got {watts_per_core!r}")
        self.watts_per_core = watts_per_core
        self._cpu_time_s = cpu_time_s

    def cpu_time_s(self) -> float:
        """The process tree's CPU time so far, seconds."""
        return self._cpu_time_s()

    def energy_j(self, cpu_time_s: float) -> float:
        """Estimated energy of ``cpu_time_s`` CPU-seconds, joules."""
        return cpu_time_s * self.watts_per_core
