"""Bearer tokens: creation (mode 0600), reading, roles, metadata (no sockets)."""

from __future__ import annotations

import stat

import pytest

from greenllm.errors import GreenllmError
from greenllm.rpc.auth import (
    Role,
    agent_token,
    bearer_metadata,
    load_or_create_tokens,
    node_token,
    operator_token,
    read_tokens,
    token_from_metadata,
    tokens_path,
)
from scheduler.server.auth import required_role


def test_tokens_are_created_private_once(tmp_path) -> None:
    state = tmp_path / "state"
    first = load_or_create_tokens(state)
    assert stat.S_IMODE(tokens_path(state).stat().st_mode) == 0o600
    assert first.operator != first.agent and len(first.operator) >= 32
    assert load_or_create_tokens(state) == first == read_tokens(state)


def test_roles_are_distinct(tmp_path) -> None:
    tokens = load_or_create_tokens(tmp_path)
    assert tokens.role_of(tokens.operator) is Role.OPERATOR
    assert tokens.role_of(tokens.agent) is Role.AGENT
    assert tokens.role_of("guess") is None
    assert tokens.role_of("") is None


def test_env_overrides_the_state_dir(tmp_path, monkeypatch) -> None:
    tokens = load_or_create_tokens(tmp_path)
    monkeypatch.delenv("GREENLLM_TOKEN", raising=False)
    monkeypatch.delenv("GREENLLM_AGENT_TOKEN", raising=False)
    assert operator_token(tmp_path) == tokens.operator
    assert agent_token(tmp_path, "node-a") == tokens.node("node-a")
    issued = node_token("another-secret-of-32-characters", "node-a")
    monkeypatch.setenv("GREENLLM_TOKEN", "from-env")
    monkeypatch.setenv("GREENLLM_AGENT_TOKEN", issued)
    assert operator_token(tmp_path) == "from-env"
    assert agent_token(tmp_path, "node-a") == issued


def test_missing_or_malformed_tokens_file_is_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("GREENLLM_TOKEN", raising=False)
    with pytest.raises(GreenllmError, match="controller creates it on its first start"):
        operator_token(tmp_path)
    tokens_path(tmp_path).write_text("{not json")
    with pytest.raises(GreenllmError, match="unreadable tokens file"):
        read_tokens(tmp_path)


def test_metadata_round_trip() -> None:
    assert bearer_metadata(None) == ()
    md = bearer_metadata("abc")
    assert token_from_metadata(md) == "abc"
    assert token_from_metadata((("authorization", "Basic abc"),)) is None
    assert token_from_metadata(None) is None


def test_methods_need_their_role() -> None:
    assert required_role("/greenllm.v1.Agent/Connect") is Role.AGENT
    assert required_role("/greenllm.v1.Cluster/SetBudget") is Role.OPERATOR
    assert required_role("/grpc.health.v1.Health/Check") is None
