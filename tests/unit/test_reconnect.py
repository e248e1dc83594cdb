"""One connection policy for the live agent and the simulator's agents: reconnect delays
(doubling, jittered, reset on registration), telemetry batches, and the simulator's
reconnect window derived from the live backoff."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from greenllm.config import parse_cluster_config
from greenllm.devices.simulated import SimulatedGPU
from greenllm.proto.v1 import agent_pb2
from greenllm.rpc import reconnect as policy
from greenllm.rpc.reconnect import Backoff, Reconnect, TelemetryBatch
from scheduler.policies import load_policy
from scheduler.sim.engine import Simulation
from scheduler.sim.plane import reconnect_s
from scheduler.sim.scenario import Scenario
from workers.agent.agent import NodeAgent


def test_delays_double_to_the_maximum_with_jitter_and_reset_once_registered() -> None:
    backoff = Backoff(initial_s=0.2, max_s=1.6, jitter=0.2)
    again = Reconnect(backoff, rng=random.Random(7))
    delays = [again.lost() for _ in range(6)]
    for delay, base in zip(delays, [0.2, 0.4, 0.8, 1.6, 1.6, 1.6], strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    assert len({round(d, 9) for d in delays[3:]}) == 3  # jittered, not one value
    again.registered()
    assert 0.16 <= again.lost() <= 0.24
    assert backoff.longest_delay_s() == pytest.approx(1.92)


def test_a_batch_goes_out_every_ticks_samples() -> None:
    batch = TelemetryBatch(3)
    one = agent_pb2.GpuSamples(index=[0], power_w=[50.0])
    out = [batch.add(one) for _ in range(7)]
    assert [o is not None for o in out] == [False, False, True, False, False, True, False]
    assert out[2] is not None and list(out[2].power_w) == [50.0] * 3


def _sim() -> Simulation:
    sc = Scenario.model_validate(
        {
            "duration_s": 5,
            "nodes": [{"name": "n", "gpus": [{"type": "L4", "count": 1}]}],
            "budget": {"budget_w": 100},
        }
    )
    return Simulation(sc, Path("."), load_policy("uniform"), "uniform")


def test_the_simulated_and_the_live_agent_run_the_same_connection_code(tmp_path: Path) -> None:
    sim = _sim()
    node = sim.nodes["n"]
    assert type(node.reconnect) is Reconnect and node.reconnect.backoff == Backoff()
    assert type(node.telemetry) is TelemetryBatch
    config = parse_cluster_config(
        {
            "nodes": [{"name": "n", "gpus": [{"type": "L4", "count": 1}]}],
            "budget": {"budget_w": 100},
            "auth": {"enabled": False},
            "state_dir": str(tmp_path),
        }
    )
    live = NodeAgent(config, "n", gpus=[SimulatedGPU("L4", 0, "n")], run_shards=False)
    assert type(live._reconnect) is Reconnect and live._reconnect.backoff == node.reconnect.backoff
    # a lost stream waits as the live agent would, and grows as it does
    node.drop_stream(1.0)
    first = node.connect_at_s - 1.0
    node.drop_stream(2.0)
    assert 0.16 <= first <= 0.24 and 0.32 <= node.connect_at_s - 2.0 <= 0.48


def test_the_reconnect_window_comes_from_the_live_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    plane = _sim().plane
    before = reconnect_s(plane)
    assert before >= Backoff().longest_delay_s()
    longer = Backoff(max_s=20.0)
    monkeypatch.setattr(policy, "Backoff", lambda: longer)
    monkeypatch.setattr("scheduler.sim.plane.Backoff", lambda: longer)
    assert reconnect_s(plane) - before == pytest.approx(
        longer.longest_delay_s() - Backoff().longest_delay_s()
    )
