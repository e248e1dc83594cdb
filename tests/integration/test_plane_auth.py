"""Bearer tokens on every RPC: roles, missing and wrong tokens, health and reflection."""

from __future__ import annotations

import stat

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from greenllm.config import load_cluster_config
from greenllm.proto.v1 import cluster_pb2, cluster_pb2_grpc
from greenllm.rpc.auth import bearer_metadata, read_tokens, tokens_path
from greenllm.rpc.client import ClusterClient, ControllerError
from scheduler.server.app import Controller

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def channel(controller):
    with grpc.insecure_channel(f"127.0.0.1:{controller.port}") as ch:
        yield ch


@pytest.fixture
def tokens(controller):
    return read_tokens(controller.config.state_dir)


def _status_code(channel, token: str | None) -> grpc.StatusCode:
    stub = cluster_pb2_grpc.ClusterStub(channel)
    try:
        stub.GetStatus(cluster_pb2.GetStatusRequest(), timeout=5, metadata=bearer_metadata(token))
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_tokens_file_is_private(controller, tokens) -> None:
    path = tokens_path(controller.config.state_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tokens.operator != tokens.agent


def test_operator_rpc_needs_the_operator_token(channel, tokens) -> None:
    assert _status_code(channel, None) == grpc.StatusCode.UNAUTHENTICATED
    assert _status_code(channel, "wrong") == grpc.StatusCode.UNAUTHENTICATED
    assert _status_code(channel, tokens.agent) == grpc.StatusCode.PERMISSION_DENIED
    assert _status_code(channel, tokens.operator) == grpc.StatusCode.OK


def test_agent_stream_needs_the_agent_token(raw_agents, messages, tokens) -> None:
    for token, code in (
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("wrong", grpc.StatusCode.UNAUTHENTICATED),
        (tokens.operator, grpc.StatusCode.PERMISSION_DENIED),
    ):
        raw = raw_agents(token)
        raw.send(register=messages.register("node-l4"))
        assert raw.final_code() == code
    raw = raw_agents(tokens.agent)
    raw.send(register=messages.register("node-l4"))
    assert raw.receive().WhichOneof("body") == "registered"


def test_health_and_reflection_take_either_token(channel, tokens) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for token in (tokens.agent, tokens.operator):
        reply = health.Check(
            health_pb2.HealthCheckRequest(service="greenllm.v1.Cluster"),
            timeout=5,
            metadata=bearer_metadata(token),
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = reflect.ServerReflectionInfo(
        iter([request]), timeout=5, metadata=bearer_metadata(tokens.operator)
    )
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"greenllm.v1.Agent", "greenllm.v1.Cluster", "grpc.health.v1.Health"} <= names


def test_client_reads_the_token_from_env_or_state_dir(config, controller, monkeypatch) -> None:
    with ClusterClient(config) as client:  # from the state directory
        assert len(client.get_status().nodes) == 3
    monkeypatch.setenv("GREENLLM_TOKEN", "not-the-token")
    with ClusterClient(config) as client, pytest.raises(ControllerError) as info:
        client.get_status()
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "rejected the token" in str(info.value)


def test_auth_disabled_needs_no_token(make_config, loop_thread) -> None:
    config = load_cluster_config(make_config(auth={"enabled": False}))
    ctl = Controller(config)
    loop_thread.run(ctl.start())
    try:
        with grpc.insecure_channel(config.controller.address) as channel:
            assert _status_code(channel, None) == grpc.StatusCode.OK
        assert not tokens_path(config.state_dir).exists()
    finally:
        loop_thread.run(ctl.stop(0))
