"""Placement of pending jobs' shards on free GPUs.

Rules:

* A job is placed whole or not at all (gang): all its shards start in the same tick.
* Higher priority first; equal priorities in the order the jobs are listed.
* Only allowed GPU types; preferred types first, then the type doing the job's workload
  at the least joules per unit at the power it can expect (its TDP-proportional share of
  the budget), as the power model predicts.
* A training job (synchronous data-parallel) uses one GPU type when one has enough free
  GPUs; when none has, it spans its allowed types, most efficient first (its shards then get
  micro-batch shares that equalise their step times, see ``decide()``'s load weights).
  Inference replicas may always span types.
* A job that can never be placed (its allowed types have fewer GPUs in the whole cluster
  than it has shards) is reported with the reason; one that waits for busy GPUs is not.
* Within a type, GPUs under the power domains with the most headroom come first (the
  least spare watts of any domain above a node: a job is not started where a rack's feed
  already binds); then those on the nodes with the most free GPUs of that type, so shards
  pack onto few nodes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import repeat

import numpy as np

from greenllm.devices.physics import Workload
from scheduler.core.powermodel import PowerModel
from scheduler.core.specs import spec_of
from scheduler.core.types import GPUState, JobState, Placement


def _expected_joules_per_unit(
    model: PowerModel, gpu_type: str, job: JobState, share_w: float
) -> float:
    spec = spec_of(gpu_type)
    limit = min(spec.max_power_limit_w, max(spec.min_power_limit_w, share_w))
    curve = model.limit_curve(gpu_type, job.workload, np.array([float(round(limit))]))
    rate = float(curve.rate[0])
    return float(curve.power_w[0]) / rate if rate > 0 else float("inf")


def _free_by_type(
    gpus: tuple[GPUState, ...], headroom_w: dict[str, float] | None = None
) -> dict[str, tuple[list[str], list[int]]]:
    """Per type (types in name order), its free GPUs as parallel lists of node and index:
    nodes under the most domain headroom first (``headroom_w``, by node), then those with
    the most free GPUs of the type, then by name; indices ascending."""
    per_node_type: dict[tuple[str, str], list[int]] = {}
    for g in gpus:
        if g.job_id is None and not g.stale and not g.reserved:
            key = (g.gpu_type, g.node)
            indices = per_node_type.get(key)
            if indices is None:
                per_node_type[key] = [g.index]
            else:
                indices.append(g.index)
    ordered: dict[str, tuple[list[str], list[int]]] = {}
    room = headroom_w or {}
    for (gpu_type, node), indices in sorted(
        per_node_type.items(),
        key=lambda kv: (kv[0][0], -room.get(kv[0][1], 0.0), -len(kv[1]), kv[0][1]),
    ):
        nodes, index = ordered.setdefault(gpu_type, ([], []))
        indices.sort()
        nodes.extend([node] * len(indices))
        index.extend(indices)
    return ordered


@dataclass(frozen=True)
class Unplaceable:
    """A pending job no placement can hold, and why."""

    job_id: str
    reason: str


def place(
    gpus: tuple[GPUState, ...],
    jobs: tuple[JobState, ...],
    model: PowerModel,
    usable_budget_w: float,
    headroom_w: dict[str, float] | None = None,
) -> tuple[list[Placement], list[Unplaceable]]:
    """Place pending jobs whole on free GPUs.

    Args:
        gpus: Every GPU (busy, reserved and stale ones are skipped).
        jobs: Jobs; only ``phase == "pending"`` ones are placed.
        model: Power model used to rank GPU types by energy efficiency.
        usable_budget_w: Budget minus reserve, watts (sets each type's expected share).
        headroom_w: Per node, the least spare watts of the power domains above it (None:
            no power tree).

    Returns:
        One placement per shard of each job that fits, and the pending jobs that can never
        fit with the reason.
    """
    pending = [j for j in jobs if j.phase == "pending" and j.shards > 0]
    if not pending:
        return [], []
    counts = Counter(g.gpu_type for g in gpus)
    unplaceable = _unplaceable(pending, counts)
    never = {u.job_id for u in unplaceable}
    pending = [j for j in pending if j.job_id not in never]
    free = _free_by_type(gpus, headroom_w)
    if not free or not pending:
        return [], unplaceable
    used = dict.fromkeys(free, 0)  # GPUs of each type taken so far, from the front

    def left(t: str) -> int:
        return len(free[t][0]) - used[t]

    def take(t: str, n: int) -> tuple[list[str], list[int]]:
        a = used[t]
        used[t] += n
        return free[t][0][a : a + n], free[t][1][a : a + n]

    total_tdp = sum(spec_of(t).tdp_w * n for t, n in counts.items()) or 1.0
    order = sorted(range(len(pending)), key=lambda i: (-pending[i].priority, i))
    efficiency: dict[tuple[str, Workload], float] = {}
    placements: list[Placement] = []
    for i in order:
        job = pending[i]
        allowed = job.allowed_gpu_types
        types = [t for t in free if left(t) > 0 and (not allowed or t in allowed)]

        def rank(t: str, job: JobState = job) -> tuple[int, float]:
            pref = job.preferred_gpu_types
            key = (t, job.workload)
            if key not in efficiency:
                share = usable_budget_w * spec_of(t).tdp_w / total_tdp
                efficiency[key] = _expected_joules_per_unit(model, t, job, share)
            return (pref.index(t) if t in pref else len(pref), efficiency[key])

        types.sort(key=rank)
        nodes: list[str] = []
        index: list[int] = []
        single = [t for t in types if left(t) >= job.shards] if job.kind == "train" else []
        if single:
            nodes, index = take(single[0], job.shards)
        elif sum(left(t) for t in types) >= job.shards:
            for t in types:
                got_nodes, got_index = take(t, min(job.shards - len(nodes), left(t)))
                nodes.extend(got_nodes)
                index.extend(got_index)
        placements.extend(map(Placement, repeat(job.job_id), range(len(nodes)), nodes, index))
    return placements, unplaceable


def _unplaceable(pending: list[JobState], counts: Counter[str]) -> list[Unplaceable]:
    """Pending jobs whose allowed types have fewer GPUs in the cluster than they need."""
    out = []
    for job in pending:
        allowed = job.allowed_gpu_types or tuple(counts)
        have = sum(counts.get(t, 0) for t in allowed)
        if have >= job.shards:
            continue
        which = ", ".join(allowed) if job.allowed_gpu_types else "any type"
        out.append(
            Unplaceable(
                job.job_id,
                f"unplaceable: {job.shards} shards, but the cluster has {have} GPUs of {which}",
            )
        )
    return out
