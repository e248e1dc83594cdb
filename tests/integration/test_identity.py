"""Per-node identity on the wire: an agent can register only as the node its token names.

The impostor of the issue: while node-l4's agent was down, an agent holding another node's
credential registered as node-l4 and reported 40 W, so node-l4 was under-counted and its
real agent was then refused. With node tokens that registration is refused, nothing about
node-l4 changes, and the real agent registers.
"""

from __future__ import annotations

import os
import subprocess
import sys

import grpc
import pytest

from greenllm.proto.v1 import cluster_pb2, cluster_pb2_grpc
from greenllm.rpc.auth import bearer_metadata, node_token, read_tokens
from greenllm.rpc.client import ClusterClient
from workers.agent.agent import Backoff, NodeAgent

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def tokens(controller):
    return read_tokens(controller.config.state_dir)


def _node(client: ClusterClient, name: str) -> cluster_pb2.NodeStatus:
    return next(n for n in client.get_status().nodes if n.name == name)


def test_another_nodes_credential_is_refused(raw_agents, messages, tokens) -> None:
    impostor = raw_agents(tokens.node("node-h100"))
    impostor.send(register=messages.register("node-l4"))
    assert impostor.final_code() == grpc.StatusCode.PERMISSION_DENIED
    real = raw_agents(tokens.node("node-l4"))
    real.send(register=messages.register("node-l4"))
    assert real.receive().WhichOneof("body") == "registered"


def test_the_impostor_cannot_under_count_a_node(
    config, controller, raw_agents, messages, tokens, loop_thread, wait
) -> None:
    with ClusterClient(config) as client:
        before = client.get_status()
        assert not _node(client, "node-l4").connected
        impostor = raw_agents(tokens.node("node-h100"))
        impostor.send(register=messages.register("node-l4"))
        impostor.send(telemetry=messages.telemetry("node-l4", 0, power_w=40.0))
        assert impostor.final_code() == grpc.StatusCode.PERMISSION_DENIED
        after = client.get_status()
        l4 = _node(client, "node-l4")
        assert not l4.connected and all(g.power_w != 40.0 for g in l4.gpus)
        assert after.accounted_power_limit_w >= before.accounted_power_limit_w - 1e-6
        # the real agent of node-l4 (its token derived on the controller's machine) registers
        agent = NodeAgent(config, "node-l4", backoff=Backoff(0.05, 0.3), run_shards=False)
        task = loop_thread.spawn(agent.run())
        try:
            wait(lambda: _node(client, "node-l4").connected, 10, "the real node-l4 agent")
            # and while it is connected, another node's credential is still refused as such
            late = raw_agents(tokens.node("node-a100"))
            late.send(register=messages.register("node-l4"))
            assert late.final_code() == grpc.StatusCode.PERMISSION_DENIED
            assert _node(client, "node-l4").connected
        finally:
            loop_thread.cancel(task)


def test_forged_or_misused_node_tokens(controller, raw_agents, messages, tokens) -> None:
    forged = raw_agents(node_token("a-secret-that-is-not-the-clusters", "node-l4"))
    forged.send(register=messages.register("node-l4"))
    assert forged.final_code() == grpc.StatusCode.UNAUTHENTICATED
    with grpc.insecure_channel(f"127.0.0.1:{controller.port}") as channel:
        stub = cluster_pb2_grpc.ClusterStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetStatus(
                cluster_pb2.GetStatusRequest(),
                timeout=5,
                metadata=bearer_metadata(tokens.node("node-l4")),
            )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED  # agent role, not operator


def test_an_agent_run_by_hand_with_its_issued_token(config_path, config, controller, wait) -> None:
    """``greenllm token issue --node`` on the controller's machine, then ``greenllm agent
    --node`` elsewhere with it in $GREENLLM_AGENT_TOKEN; another node's token stops the agent
    at start with one line."""
    cli = [sys.executable, "-m", "greenllm.cli.main"]
    issued = subprocess.run(
        [*cli, "token", "issue", "--node", "node-l4", "--config", str(config_path)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.strip()  # fmt: skip
    wrong = read_tokens(config.state_dir).node("node-h100")
    env = {**os.environ, "GREENLLM_AGENT_TOKEN": wrong}
    refused = subprocess.run(
        [*cli, "agent", "--node", "node-l4", "--config", str(config_path)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "greenllm: error: $GREENLLM_AGENT_TOKEN is the token of node 'node-h100', not of node "
        "'node-l4'"
    ]
    env["GREENLLM_AGENT_TOKEN"] = issued
    agent = subprocess.Popen(
        [*cli, "agent", "--node", "node-l4", "--config", str(config_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        with ClusterClient(config) as client:
            wait(lambda: _node(client, "node-l4").connected, 30, "the hand-run agent")
    finally:
        agent.terminate()
        agent.wait(20)
