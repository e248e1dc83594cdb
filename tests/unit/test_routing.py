"""The simulator routes a job's requests over its replicas as the cluster's ingress does
(one rule, :func:`greenllm.serving.routing.route_key`): the same arrivals, completions and
weights give the same replica for every request on both sides."""

from __future__ import annotations

import random
from collections import deque
from pathlib import Path
from types import SimpleNamespace

from scheduler.sim.replica import Request
from scheduler.sim.world import ShardModel, World
from workers.serve.ingress import Router, Upstream

WEIGHTS = {"j-2-0": 0.5, "j-2-1": 0.3, "j-2-10": 0.2}


class OneAtATime:
    """Arrivals: hands the simulator one queued request per step."""

    def __init__(self) -> None:
        self.next: list[Request] = []

    def take(self, t0_s: float, t1_s: float) -> list[Request]:
        out, self.next = self.next, []
        return out


def test_sim_and_ingress_pick_the_same_replica_for_every_request() -> None:
    rng = random.Random(3)
    world = World(Path("."), seed=0)
    arrivals = OneAtATime()
    job = SimpleNamespace(
        arrivals=arrivals, offered_output_tokens=0.0, backlog=deque(), weights=dict(WEIGHTS)
    )
    shards = [ShardModel(s, "j", i, 2, "n", i) for i, s in enumerate(WEIGHTS)]
    router = Router(clock=lambda: 0.0)
    upstreams = [Upstream(s, f"http://{s}/v1", w) for s, w in WEIGHTS.items()]
    ingress_picks, sim_picks = [], []
    for step in range(300):
        busy = [s for s in shards if s.replica.in_flight > 0]
        if busy and rng.random() < 0.45:  # a request ends at the same replica on both sides
            done = rng.choice(busy)
            done.replica.waiting.popleft()
            router.in_flight[f"http://{done.shard_id}/v1"] -= 1
        ingress_picks.append(router.order(upstreams)[0].shard_id)
        arrivals.next = [Request(float(step), 8, 8)]
        before = {s.shard_id: s.requests for s in shards}
        world.arrive(job, float(step), 1.0, shards)  # type: ignore[arg-type]
        (picked,) = [s.shard_id for s in shards if s.requests > before[s.shard_id]]
        sim_picks.append(picked)
        router.in_flight[f"http://{ingress_picks[-1]}/v1"] += 1
    assert sim_picks == ingress_picks
    assert len(set(sim_picks)) == 3, "every replica took requests"
