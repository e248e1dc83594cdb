"""Per-node credentials: node tokens bound to a name, refused when forged, malformed, empty
or another node's; the tokens file loader refuses empty, null and short secrets; the CLI's
``token issue`` (no sockets)."""

from __future__ import annotations

import json

import pytest

from greenllm.cli.main import main
from greenllm.config import parse_cluster_config
from greenllm.devices.discovery import simulated_gpus
from greenllm.errors import GreenllmError
from greenllm.rpc.auth import (
    Credential,
    Role,
    agent_token_from_env,
    check_node_token,
    load_or_create_tokens,
    node_of_token,
    node_token,
    read_tokens,
    tokens_path,
)
from workers.agent.agent import NodeAgent

SECRET = "s" * 32


def test_a_node_token_names_its_node_and_verifies(tmp_path) -> None:
    tokens = load_or_create_tokens(tmp_path)
    token = tokens.node("node-l4")
    assert token.startswith("node:node-l4:") and node_of_token(token) == "node-l4"
    assert tokens.verify(token) == Credential(Role.AGENT, "node-l4")
    assert tokens.role_of(token) is Role.AGENT
    assert tokens.verify(tokens.operator) == Credential(Role.OPERATOR)
    assert tokens.verify(tokens.agent) == Credential(Role.AGENT)


def test_forged_and_foreign_node_tokens_are_refused(tmp_path) -> None:
    tokens = load_or_create_tokens(tmp_path)
    real = tokens.node("node-l4")
    mac = real.rpartition(":")[2]
    forged_mac = ("0" if mac[0] != "0" else "1") + mac[1:]
    assert tokens.verify(f"node:node-l4:{forged_mac}") is None
    assert tokens.verify(f"node:node-h100:{mac}") is None  # another node's MAC
    assert tokens.verify(node_token("not-the-cluster-secret", "node-l4")) is None
    for bad in ("", "node:", "node::" + mac, "node:node-l4", "node:node-l4:xyz", real + "0"):
        assert tokens.verify(bad) is None, bad


def test_node_names_must_be_valid() -> None:
    with pytest.raises(GreenllmError, match="not a valid node name"):
        node_token(SECRET, "bad name")
    assert node_of_token("node:a:b:" + "0" * 64) is None  # the name may not hold a colon


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"operator": SECRET, "agent": ""}, "agent is empty"),
        ({"operator": SECRET, "agent": None}, "agent is null"),
        ({"operator": SECRET}, "agent is null"),
        ({"operator": 12345678901234567, "agent": SECRET}, "operator is int"),
        ({"operator": "short", "agent": SECRET}, "operator is malformed"),
        ({"operator": "with space " * 3, "agent": SECRET}, "operator is malformed"),
        ({"operator": SECRET, "agent": SECRET}, "must differ"),
        (["not", "an", "object"], "not a JSON object"),
    ],
)
def test_the_tokens_file_refuses_empty_null_and_malformed_secrets(tmp_path, doc, message) -> None:
    tokens_path(tmp_path).write_text(json.dumps(doc))
    with pytest.raises(GreenllmError, match=message) as info:
        read_tokens(tmp_path)
    assert "\n" not in str(info.value) and str(tokens_path(tmp_path)) in str(info.value)


def test_the_agent_token_variable_is_checked_at_start(monkeypatch) -> None:
    monkeypatch.delenv("GREENLLM_AGENT_TOKEN", raising=False)
    assert agent_token_from_env("node-a") is None
    for value, message in (
        ("", "set but empty"),
        ("   ", "set but empty"),
        ("the-old-shared-token-of-all-nodes", "not a node token"),
        (node_token(SECRET, "node-b"), "token of node 'node-b', not of node 'node-a'"),
    ):
        monkeypatch.setenv("GREENLLM_AGENT_TOKEN", value)
        with pytest.raises(GreenllmError, match=message):
            agent_token_from_env("node-a")
    good = node_token(SECRET, "node-a")
    monkeypatch.setenv("GREENLLM_AGENT_TOKEN", good + "\n")
    assert agent_token_from_env("node-a") == good
    assert check_node_token(good, "node-a", "x") == good


CONFIG = {
    "nodes": [
        {"name": "node-a", "gpus": [{"type": "L4", "count": 1}]},
        {"name": "node-b", "gpus": [{"type": "L4", "count": 1}]},
    ],
    "budget": {"budget_w": 140},
}


def test_an_agent_with_another_nodes_token_does_not_start(monkeypatch, tmp_path) -> None:
    config = parse_cluster_config({**CONFIG, "state_dir": str(tmp_path)})
    gpus = simulated_gpus(config.node("node-a"))
    monkeypatch.setenv("GREENLLM_AGENT_TOKEN", node_token(SECRET, "node-b"))
    with pytest.raises(GreenllmError, match="token of node 'node-b'"):
        NodeAgent(config, "node-a", gpus=gpus, run_shards=False)
    monkeypatch.delenv("GREENLLM_AGENT_TOKEN")
    with pytest.raises(GreenllmError, match="not a node token"):
        NodeAgent(config, "node-a", gpus=gpus, run_shards=False, token="")
    agent = NodeAgent(
        config, "node-a", gpus=gpus, run_shards=False, token=node_token(SECRET, "node-a")
    )
    assert agent.node == "node-a"


def test_token_issue_prints_the_nodes_token(tmp_path, capsys) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(json.dumps({**CONFIG, "state_dir": str(tmp_path / "state")}))
    argv = ["token", "issue", "--node", "node-a", "--config", str(path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no tokens file" in err
    tokens = load_or_create_tokens(tmp_path / "state")
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == tokens.node("node-a")
    assert tokens.verify(printed) == Credential(Role.AGENT, "node-a")
    assert main([*argv[:3], "bad name", *argv[4:]]) == 1
    assert "not a valid node name" in capsys.readouterr().err
