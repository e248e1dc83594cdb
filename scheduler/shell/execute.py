"""Carrying out ``decide()``'s actions: shards started, limits and clocks set, load shared.

Commands are queued per node in ``decide()``'s order (lowerings before raises) and leave
together at the end of the step, after :class:`~scheduler.shell.persist.Persister` has put
every raise on disk.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from typing import TYPE_CHECKING

from greenllm.proto.v1 import agent_pb2
from scheduler.core.lifecycle import JOB_TRANSITIONS, JobEvent, JobPhase, ShardPhase, next_phase
from scheduler.core.reconcile import shard_id
from scheduler.core.types import Actions, Placement
from scheduler.shell.jobs import ShardRecord, park
from scheduler.shell.ports import StoredEvent

if TYPE_CHECKING:
    from scheduler.shell.controller import ControllerShell


#: Load weights are rounded to this many decimals (smaller changes are not sent).
WEIGHT_DIGITS = 4
#: Rendezvous ports are drawn from [RENDEZVOUS_PORT_BASE, + RENDEZVOUS_PORTS).
RENDEZVOUS_PORT_BASE, RENDEZVOUS_PORTS = 29500, 20000


def rendezvous_port(job_id: str, generation: int) -> int:
    """The TCP port a job generation's ranks meet at on rank 0's node: stable for the
    generation, different for the next one (a port still held by a dead rank is not reused
    at once)."""
    return RENDEZVOUS_PORT_BASE + zlib.crc32(f"{job_id}/{generation}".encode()) % RENDEZVOUS_PORTS


def carry_out(shell: ControllerShell, actions: Actions, now_s: float) -> None:
    """Queue the commands of ``actions``, in order."""
    by_job: dict[str, list[Placement]] = defaultdict(list)
    for p in actions.placements:
        by_job[p.job_id].append(p)
    for job_id, placements in by_job.items():
        _place(shell, job_id, placements, now_s)
    for lim in actions.power_limits:
        body = agent_pb2.SetPowerLimit(gpu_index=lim.index, power_limit_w=lim.power_limit_w)
        shell.queue(lim.node, agent_pb2.Command(set_power_limit=body), now_s)
    for lock in actions.clock_locks:
        body_l = agent_pb2.LockSmClocks(
            gpu_index=lock.index,
            min_sm_clock_mhz=lock.min_sm_clock_mhz,
            max_sm_clock_mhz=lock.max_sm_clock_mhz,
        )
        shell.queue(lock.node, agent_pb2.Command(lock_sm_clocks=body_l), now_s)
    for reset in actions.clock_resets:
        body_r = agent_pb2.ResetSmClocks(gpu_index=reset.index)
        shell.queue(reset.node, agent_pb2.Command(reset_sm_clocks=body_r), now_s)
    _load_weights(shell, actions, now_s)
    shell.unmet_slos = {s.job_id: s.reason for s in actions.unmet_slos}
    for job_id, count in actions.active_replicas:
        job = shell.jobs.jobs.get(job_id)
        if job is not None and job.active_replicas != count:
            before = job.active_replicas if job.active_replicas is not None else len(job.shards)
            job.active_replicas = count
            job.replicas_since_s = now_s
            shell.persist.event(
                StoredEvent(
                    shell.wall_clock(),
                    job_id,
                    "replicas",
                    f"job {job_id}: {count} of {len(job.shards)} replicas serve (was {before})",
                    "job",
                    job_id,
                )
            )
    for u in actions.unplaceable:
        job = shell.jobs.jobs.get(u.job_id)
        if job is not None and job.reason != u.reason:
            job.reason = u.reason
            shell.persist.event(
                StoredEvent(
                    shell.wall_clock(),
                    job.job_id,
                    "unplaceable",
                    f"job {job.job_id}: {u.reason}",
                    "job",
                    job.job_id,
                )
            )
            shell.persist.dirty(job)


def _place(shell: ControllerShell, job_id: str, placements: list[Placement], now_s: float) -> None:
    job = shell.jobs.jobs[job_id]
    new = JobPhase(next_phase(JOB_TRANSITIONS, job.phase, JobEvent.PLACED))
    where = ", ".join(f"{p.node}:{p.index}" for p in placements)
    shell.persist.event(
        StoredEvent(
            shell.wall_clock(),
            job_id,
            new.value,
            f"job {job_id} placed on {where}",
            "job",
            job_id,
            job.phase.value,
        )
    )
    job.phase, job.phase_since_s, job.reason = new, now_s, f"placed on {where}"
    first = min(placements, key=lambda p: p.shard)
    master_addr = shell.nodes[first.node].address or "127.0.0.1"
    master_port = rendezvous_port(job_id, job.generation)
    for p in placements:
        gpus = shell.nodes[p.node].gpus
        job.energy_start_j[(p.node, p.index)] = (
            gpus[p.index].energy_j() if p.index < len(gpus) else None
        )
        peers = sorted(q.shard for q in placements if q.node == p.node)
        start = agent_pb2.StartShard(
            shard_id=shard_id(job_id, p.shard),
            job_id=job_id,
            gpu_indices=[p.index],
            spec_json=job.spec_json,
            generation=job.generation,
            master_addr=master_addr,
            master_port=master_port,
            world_size=len(placements),
            rank=p.shard,
            local_rank=peers.index(p.shard),
            local_world_size=len(peers),
            gpu_uuid=gpus[p.index].uuid if p.index < len(gpus) else "",
        )
        cid = shell.queue(p.node, agent_pb2.Command(start_shard=start), now_s)
        shard = job.shards[p.shard] = ShardRecord(
            job_id,
            p.shard,
            job.generation,
            p.node,
            p.index,
            ShardPhase.STARTING,
            now_s,
            start_command=cid,
        )
        if cid is not None:
            shell.start_commands[cid] = shard
    shell.persist.dirty(job)


def _load_weights(shell: ControllerShell, actions: Actions, now_s: float) -> None:
    """Each node hosting a shard of a job gets the whole job's weights (a replica routes by
    its slice of all of them), when they changed (beyond rounding) or the node has not got
    them yet."""
    per_job: dict[str, dict[tuple[str, int], float]] = defaultdict(dict)
    nodes_of: dict[str, set[str]] = defaultdict(set)
    for w in actions.load_weights:
        if w.job_id in shell.jobs.jobs:
            per_job[w.job_id][(w.node, w.index)] = round(w.weight, WEIGHT_DIGITS)
    for gone in set(shell.weights_sent) - set(per_job):
        del shell.weights_sent[gone]
    per_node: dict[str, dict[str, float]] = defaultdict(dict)
    for job_id, by_gpu in per_job.items():
        job = shell.jobs.jobs[job_id]
        weights = {
            s.shard_id: by_gpu[(s.node, s.index)]
            for s in job.shards.values()
            if (s.node, s.index) in by_gpu
        }
        nodes = {s.node for s in job.shards.values()}
        sent = shell.weights_sent.get(job_id)
        if sent is not None and sent[0] == weights:
            nodes = nodes - sent[1]
        else:
            shell.weights_sent[job_id] = (weights, set())
        for node in nodes:
            per_node[node].update(weights)
        nodes_of[job_id] = nodes
    for job_id, by_gpu in per_job.items():
        job = shell.jobs.jobs[job_id]
        if job.spec.kind == "infer":  # a drained replica's GPU goes back to the cluster
            for gpu, weight in by_gpu.items():
                park(job, shell.nodes, gpu, weight <= 0.0)
    for node, weights in per_node.items():
        body = agent_pb2.SetLoadWeights(weights=weights)
        if shell.queue(node, agent_pb2.Command(set_load_weights=body), now_s) is None:
            continue
        for job_id, nodes in nodes_of.items():
            if node in nodes:
                shell.weights_sent[job_id][1].add(node)
