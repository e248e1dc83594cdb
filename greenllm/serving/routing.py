"""Which replica serves the next request: one rule for the live ingress and the simulator.

A request goes to the serving replica with the fewest requests in flight (queued or being
generated) per unit of load weight, counting the new one; ties go to the lowest shard id.
Weights come from the controller (each replica's share of the job's throughput at its
settings; 0: drained, takes nothing new). The ingress (``workers.serve.ingress``) and the
simulator (``scheduler.sim.world``) both route with :func:`route_key`, so the simulator
spreads a job's requests over its replicas as the cluster does (how full each replica's
batches are, and so its joules per token, depends on it).
"""

from __future__ import annotations


def route_key(in_flight: int, weight: float, shard_id: str) -> tuple[float, str]:
    """Sort key of a replica for the next request (lowest first).

    Args:
        in_flight: Requests queued or being generated at the replica now.
        weight: Its load weight (> 0; drained replicas are left out before).
        shard_id: Its shard id (breaks ties, the same way on both sides).
    """
    return (in_flight + 1) / weight, shard_id
