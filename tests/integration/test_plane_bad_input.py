"""Bad input is rejected with a precise status code; the server and other nodes carry on."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import grpc
import pytest

from greenllm.proto.v1 import agent_pb2
from greenllm.rpc.client import ClusterClient, ControllerError

pytestmark = pytest.mark.timeout(60)


def _registered(raw, messages, node: str) -> None:
    raw.send(register=messages.register(node))
    assert raw.receive().WhichOneof("body") == "registered"


def _node(client: ClusterClient, name: str):
    return next(n for n in client.get_status().nodes if n.name == name)


def test_unknown_node_is_not_found(raw_agents, messages) -> None:
    raw = raw_agents()
    reg = messages.register("node-h100")
    reg.node = "node-nowhere"
    raw.send(register=reg)
    assert raw.final_code() == grpc.StatusCode.NOT_FOUND


def test_telemetry_before_register_is_refused(raw_agents, messages) -> None:
    raw = raw_agents()
    raw.send(telemetry=messages.telemetry("node-h100"))
    assert raw.final_code() == grpc.StatusCode.FAILED_PRECONDITION


def test_inventory_that_disagrees_with_the_config(raw_agents, messages) -> None:
    raw = raw_agents()
    reg = messages.register("node-l4")
    del reg.gpus[-1]
    raw.send(register=reg)
    assert raw.final_code() == grpc.StatusCode.FAILED_PRECONDITION


def test_second_registration_of_a_live_node(config, raw_agents, messages, wait) -> None:
    first = raw_agents()
    _registered(first, messages, "node-a100")
    second = raw_agents()
    second.send(register=messages.register("node-a100"))
    assert second.final_code() == grpc.StatusCode.ALREADY_EXISTS
    first.send(telemetry=messages.telemetry("node-a100"))
    with ClusterClient(config) as client:
        wait(lambda: not _node(client, "node-a100").stale, 5, "the first stream's telemetry")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("power_w", math.nan),
        ("power_w", -5.0),
        ("power_w", 1e6),
        ("power_limit_w", math.inf),
        ("energy_j", -1.0),
        ("utilization_pct", 250.0),
    ],
)
def test_implausible_samples_are_rejected_and_others_kept(
    config, raw_agents, messages, wait, field: str, value: float
) -> None:
    good = raw_agents()
    _registered(good, messages, "node-h100")
    good.send(telemetry=messages.telemetry("node-h100"))
    bad = raw_agents()
    _registered(bad, messages, "node-l4")
    bad.send(telemetry=messages.telemetry("node-l4"))
    with ClusterClient(config) as client:
        wait(lambda: not _node(client, "node-h100").stale, 5, "the good node's telemetry")
        wait(lambda: not _node(client, "node-l4").stale, 5, "the bad node's first telemetry")
        before = [g.power_w for g in _node(client, "node-l4").gpus]

        batch = messages.telemetry("node-l4", gpu=3, **{field: value})
        batch.gpus.power_w[0] = 33.0  # valid, but in a batch that is rejected as a whole
        bad.send(telemetry=batch)
        assert bad.final_code() == grpc.StatusCode.INVALID_ARGUMENT
        l4 = _node(client, "node-l4")
        assert not l4.connected
        assert [g.power_w for g in l4.gpus] == before, "a rejected batch changes nothing"
        h100 = _node(client, "node-h100")
        assert h100.connected and len(h100.gpus) == 4 and h100.gpus[0].power_w > 0

        again = raw_agents()
        _registered(again, messages, "node-l4")  # the node may come back after a rejection


def test_telemetry_for_a_gpu_the_node_lacks(raw_agents, messages) -> None:
    raw = raw_agents()
    _registered(raw, messages, "node-l4")
    batch = messages.telemetry("node-l4")
    batch.gpus.index[0] = 9
    raw.send(telemetry=batch)
    assert raw.final_code() == grpc.StatusCode.INVALID_ARGUMENT


def test_telemetry_columns_of_unequal_length(raw_agents, messages) -> None:
    raw = raw_agents()
    _registered(raw, messages, "node-l4")
    batch = messages.telemetry("node-l4")
    del batch.gpus.energy_j[-1]
    raw.send(telemetry=batch)
    assert raw.final_code() == grpc.StatusCode.INVALID_ARGUMENT


def test_ack_for_an_unknown_command(raw_agents, messages) -> None:
    raw = raw_agents()
    _registered(raw, messages, "node-l4")
    ack = agent_pb2.CommandAck(command_id=10**9, success=True)
    raw.send(acks=agent_pb2.AckBatch(acks=[ack]))
    assert raw.final_code() == grpc.StatusCode.INVALID_ARGUMENT


def test_oversized_message(config, raw_agents, messages) -> None:
    raw = raw_agents()
    _registered(raw, messages, "node-l4")
    huge = agent_pb2.ShardSample(shard_id="x" * (5 * 1024 * 1024), job_id="j")
    raw.send(telemetry=agent_pb2.TelemetryBatch(shards=[huge]))
    assert raw.final_code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with ClusterClient(config) as client:
        assert len(client.get_status().nodes) == 3, "the server keeps running"


def _code(call) -> grpc.StatusCode:
    with pytest.raises(ControllerError) as info:
        call()
    return info.value.code


def test_cluster_api_rejects_bad_requests(config, controller) -> None:
    with ClusterClient(config) as client:
        assert _code(lambda: client.set_budget(math.nan)) == grpc.StatusCode.INVALID_ARGUMENT
        assert _code(lambda: client.set_budget(-3)) == grpc.StatusCode.INVALID_ARGUMENT
        assert _code(lambda: client.set_budget(500)) == grpc.StatusCode.FAILED_PRECONDITION
        assert _code(lambda: client.set_budget(3000, 3000)) == grpc.StatusCode.INVALID_ARGUMENT
        assert _code(lambda: client.set_policy("fastest")) == grpc.StatusCode.NOT_FOUND
        assert _code(lambda: client.submit_job("{not json")) == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(ControllerError, match="shards"):
            client.submit_job(json.dumps({"name": "j", "kind": "train", "shards": 0}))
        assert _code(lambda: client.cancel_job("nope")) == grpc.StatusCode.NOT_FOUND
        assert _code(lambda: next(client.watch_status(-1))) == grpc.StatusCode.INVALID_ARGUMENT
        assert client.get_status().budget_w == 2800, "nothing changed"


def test_watch_status_streams(config, controller) -> None:
    with ClusterClient(config) as client:
        stream = client.watch_status(0.05)
        first, second = next(stream), next(stream)
        stream.close()
    assert second.timestamp_s > first.timestamp_s


def test_unreachable_controller_is_one_line(config_path, config) -> None:
    env = {**os.environ, "GREENLLM_TOKEN": "anything"}
    out = subprocess.run(
        [sys.executable, "-m", "greenllm.cli.main", "status", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"greenllm: error: no controller answers at {config.controller.address} "
        "(start one with `greenllm up`)"
    ]
