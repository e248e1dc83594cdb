"""How many replicas of an inference job serve: enough for its demand, no more.

A replica's static power is paid whether it serves or not, and a half-empty decode batch
costs nearly the time and power of a full one: serving a load with fewer, fuller replicas
takes fewer joules per token (what DynamoLLM and throttLL'eM do). The count follows the
measured demand (arrival rate plus what waits, with headroom) with hysteresis: it grows at
once when the serving replicas would run above :data:`UP_UTILIZATION` of their capacity,
and shrinks only when fewer would stay below :data:`DOWN_UTILIZATION`, so it does not flap.
Demand and capacity are in GPU time: a replica's capacity is its curve in output tokens
per second with each token's share of prefill included
(:func:`scheduler.core.powermodel.serving_curve`), so a prefill-heavy load gets the
replicas its prompts need, not those its few output tokens would.

What the replicas measure overrides the prediction (SLO feedback, ``job.latency``): when
the worst recent p99 TTFT or TPOT, or the wait of a queued request, reaches
:data:`OVER_SLO` of its objective, the count grows at once by :data:`STEP_UP_FRAC` (at
least one; again after :data:`FEEDBACK_COOLDOWN_S` while the miss lasts) and the policy
runs the job's GPUs at full clocks. A TTFT miss is a queue's: for
:data:`~greenllm.serving.slo.LATENCY_WINDOW_S` after the count changes, the p99 TTFT
(whose window still holds the requests the old count served) is not a miss by itself, the
queue now (``oldest_wait_s``) is (:func:`live_ratio`); otherwise a burst's first seconds
held the job at full clocks and its highest count for the whole window after each step
(bursty: 0.632x -> 0.517x of the static fleet's J/token, SLOs met). TPOT has no live
figure: its p99 always counts. It shrinks only while every figure stays under
:data:`WELL_UNDER_SLO` of its objective and the count has held :data:`DOWN_HOLD_S`, and then
(the SLO's slack) one replica at a time down to what the demand needs at full utilization,
below the demand's own hysteresis band.
Replicas taken out are drained (load weight 0: no new request; what they hold finishes)
and parked at their lowest limit and clock; the most efficient GPUs serve first.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from greenllm.serving.slo import LATENCY_WINDOW_S
from scheduler.core.problem import Group
from scheduler.core.types import JobState, LatencyFeedback

#: Grow when the serving replicas would be busier than this share of their capacity.
UP_UTILIZATION = 1.0
#: Shrink only to a count that stays below this share.
DOWN_UTILIZATION = 0.85
#: A measured figure at this share of its SLO (or over) is a miss: scale up, clocks up.
OVER_SLO = 0.9
#: Shrink only while every measured figure stays below this share of its SLO.
WELL_UNDER_SLO = 0.7
#: A measured miss adds this share of the serving replicas (at least one).
STEP_UP_FRAC = 0.25
#: A miss that lasts adds replicas again after this long, seconds (the latency window
#: still holds the misses from before the last step up until new requests replace them).
FEEDBACK_COOLDOWN_S = 5.0
#: The count holds this long after a change before it may shrink, seconds.
DOWN_HOLD_S = 15.0


def over_slo(job: JobState) -> bool:
    """Its replicas measure a latency miss of the count now serving, or a queue heading
    for one (:func:`live_ratio`)."""
    return job.latency is not None and live_ratio(job.latency) >= OVER_SLO


def live_ratio(fb: LatencyFeedback) -> float:
    """:meth:`~scheduler.core.types.LatencyFeedback.ratio` without the p99 TTFT of a
    window that still holds requests from before the count last changed: a TTFT miss is
    a queue's, and the queue now (``oldest_wait_s``) says whether it lasts. TPOT has no
    live figure: its p99 always counts."""
    worst = 0.0
    if fb.slo_ttft_s > 0:
        ttft = fb.ttft_p99_s if fb.since_scaled_s >= LATENCY_WINDOW_S else 0.0
        worst = max(ttft, fb.oldest_wait_s) / fb.slo_ttft_s
    if fb.slo_tpot_s > 0:
        worst = max(worst, fb.tpot_p99_s / fb.slo_tpot_s)
    return worst


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
    mean = job.mean_demand_units_per_s
    steady = need if mean is None else min(need, max(mean, job.slo_units_per_s))
    grow_to = math.ceil(need / (UP_UTILIZATION * capacity))
    shrink_to = math.ceil(steady / (DOWN_UTILIZATION * capacity))
    current = job.active_shards if job.active_shards is not None else total
    count = current
    if count < grow_to:
        count = grow_to
    elif count > shrink_to:
        count = shrink_to
    fb = job.latency
    if fb is not None:
        if over_slo(job):  # a measured miss: never fewer, and more unless just added
            count = max(count, current)
            if fb.since_scaled_s >= FEEDBACK_COOLDOWN_S:
                count = max(count, current + max(1, math.ceil(current * STEP_UP_FRAC)))
        elif fb.ratio() >= WELL_UNDER_SLO or fb.since_scaled_s < DOWN_HOLD_S:
            count = max(count, current)
        elif count > grow_to:  # SLO slack held: consolidate, one replica at a time
            count = max(grow_to, count - 1)
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
