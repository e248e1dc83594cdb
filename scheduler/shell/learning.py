"""Refining the power model from telemetry (the live controller and the simulator alike).

A reading teaches the model only once its GPU's limit has held for
:data:`SETTLED_AFTER_S`, with no command pending, on a fresh node, while a training shard
does work: then the measured watts and work per second belong to the settings in force.

Not when the shard says its (simulated) GPU waited more than :data:`MAX_WAIT_FRACTION` of
the time (nor before the settings have held for the window that share is taken over, when
it may still describe the previous ones): a rank of a data-parallel job that waits at the
gradient exchange for a slower rank (another GPU type, or a rank held back by the CPU)
does the slower rank's work per second and draws near idle power while it waits. Learning
that as the GPU's rate and power at its limit would teach the model that the fast type is
as slow as the slow one (and draws less than it does), the batch shares planned from the
model would stay equal, and the fast ranks would keep waiting.

The rate taught is measured over the shard's reports taken since the settings took effect
and after its first work, never over a window that reaches back to a rank starting its
process or to other settings: such a rate is not its GPU's at these settings, and a bin's
median keeps such readings long after.
"""

from __future__ import annotations

import numpy as np

from greenllm.pacing import WAIT_WINDOW_S
from scheduler.core.powermodel import PowerModel
from scheduler.core.reconcile import shard_id
from scheduler.core.types import GPUState, ObservedState
from scheduler.shell.nodes import NodeRecord

#: A GPU's readings teach the power model once its limit has held this long, seconds.
SETTLED_AFTER_S = 3.0
#: Readings fed to the model per control step at most (a random subset of the settled
#: ones, so the cost stays flat on large clusters).
LEARN_SAMPLES = 64
#: A shard whose GPU waited more than this share of its recent time does not teach.
MAX_WAIT_FRACTION = 0.1
#: A rate measured over less than this (after the settings took effect) does not teach, s.
MIN_RATE_SPAN_S = 1.5


def learn(
    model: PowerModel,
    observed: ObservedState,
    nodes: dict[str, NodeRecord],
    rng: np.random.Generator,
) -> int:
    """Feed settled training readings to ``model``; returns how many were fed."""
    kinds = {j.job_id: j for j in observed.jobs}
    rows: list[tuple[int, float]] = []
    for pos, g in enumerate(observed.gpus):
        if g.stale:
            continue
        record = nodes[g.node].gpus[g.index]
        held_w, since_s = record.limit_since
        if held_w != g.acked_limit_w:
            record.limit_since = (g.acked_limit_w, observed.now_s)
            continue
        job = kinds.get(g.job_id) if g.job_id else None
        if job is None or job.kind != "train" or g.pending_limit_w is not None:
            continue
        if observed.now_s - since_s < SETTLED_AFTER_S or g.work_rate <= 0:
            continue
        rate = settled_rate(g, nodes[g.node], observed.now_s - since_s)
        if rate is not None and rate > 0:
            rows.append((pos, rate))
    if len(rows) > LEARN_SAMPLES:
        picked = rng.choice(len(rows), LEARN_SAMPLES, replace=False).tolist()
        rows = [rows[i] for i in picked]
    fed = 0
    for pos, rate in rows:
        g = observed.gpus[pos]
        power_w = nodes[g.node].gpus[g.index].average_power_w()
        if power_w is None:
            continue
        job = kinds[str(g.job_id)]
        model.observe(
            g.gpu_type, job.workload, g.acked_limit_w, g.locked_max_sm_clock_mhz, power_w, rate
        )
        fed += 1
    return fed


def settled_rate(g: GPUState, node: NodeRecord, settled_s: float) -> float | None:
    """The work rate of the shard on ``g`` over the part of its recent reports taken while
    the settings in force held (``settled_s``) and after its first work; None when that is
    too short, or when it reports its GPU waited too long (see the module doc)."""
    if g.job_id is None or g.shard is None:
        return g.work_rate
    report = node.shards.get(shard_id(g.job_id, g.shard))
    if report is None:
        return g.work_rate
    latest = report.latest
    if latest.HasField("gpu_wait_fraction") and (
        latest.gpu_wait_fraction > MAX_WAIT_FRACTION or settled_s < WAIT_WINDOW_S
    ):  # it waited, or its wait fraction still describes earlier settings
        return None
    if not report.work_window:
        return g.work_rate
    last_t = report.work_window[-1][0]
    pts = [(t, w) for t, w in report.work_window if t >= last_t - settled_s]
    if len(pts) < 2 or pts[0][1] <= 0:
        return None
    span_s = pts[-1][0] - pts[0][0]
    if span_s < MIN_RATE_SPAN_S:
        return None
    return max(0.0, (pts[-1][1] - pts[0][1]) / span_s)
