"""How many replicas of an inference job serve: enough for its demand, no more.

A replica's static power is paid whether it serves or not, and a half-empty decode batch
costs nearly the time and power of a full one: serving a load with fewer, fuller replicas
takes fewer joules per token (what DynamoLLM and throttLL'eM do). The count follows the
measured demand (arrival rate plus what waits, with headroom) with hysteresis: it grows at
once when the serving replicas would run above :data:`UP_UTILIZATION` of their capacity,
and shrinks only when fewer would stay below :data:`DOWN_UTILIZATION`, so it does not flap.
Replicas taken out are drained (load weight 0: no new request; what they hold finishes)
and parked at their lowest limit and clock; the most efficient GPUs serve first.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from scheduler.core.problem import Group
from scheduler.core.types import JobState

#: Grow when the serving replicas would be busier than this share of their capacity.
UP_UTILIZATION = 0.8
#: Shrink only to a count that stays below this share.
DOWN_UTILIZATION = 0.5


def replica_count(job: JobState, groups: list[Group]) -> int | None:
    """Replicas of ``job`` that should serve (None: the job does not scale)."""
    total = sum(g.size for g in groups)
    low = job.min_shards if job.min_shards is not None else total
    if job.kind != "infer" or low >= total or job.demand_units_per_s is None:
        return None
    capacity = sum(g.size * float(g.clock_curve.rate[-1]) for g in groups) / total
    if capacity <= 0:
        return total
    need = max(job.demand_units_per_s, job.slo_units_per_s)
    grow_to = math.ceil(need / (UP_UTILIZATION * capacity))
    shrink_to = math.ceil(need / (DOWN_UTILIZATION * capacity))
    count = job.active_shards if job.active_shards is not None else total
    if count < grow_to:
        count = grow_to
    elif count > shrink_to:
        count = shrink_to
    return min(total, max(1, low, count))


def serving_subset(groups: list[Group], count: int) -> tuple[list[Group], np.ndarray]:
    """The groups cut down to ``count`` replicas, the most efficient types first; and the
    rows left out (parked)."""

    def joules_per_unit(g: Group) -> float:
        c = g.clock_curve
        per_unit = np.where(c.rate > 0, c.power_w / np.maximum(c.rate, 1e-12), np.inf)
        return float(np.min(per_unit))

    kept: list[Group] = []
    parked: list[np.ndarray] = []
    left = count
    for g in sorted(groups, key=joules_per_unit):
        take = min(left, g.size)
        if take > 0:
            kept.append(replace(g, rows=g.rows[:take]))
        parked.append(g.rows[take:])
        left -= take
    rows = np.concatenate(parked) if parked else np.zeros(0, dtype=int)
    return kept, rows.astype(int)
