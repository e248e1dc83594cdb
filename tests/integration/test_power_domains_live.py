"""Power domains on a live controller with real agents (loopback gRPC): a rack's limit set
from the CLI is held by the GPUs the agents really drive, status and metrics show it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from greenllm.config import load_cluster_config
from greenllm.rpc.client import ClusterClient

pytestmark = pytest.mark.timeout(120)

TREE = [
    {
        "name": "site",
        "limit_w": 2800,
        "domains": [
            {"name": "rack-h", "limit_w": 1500, "nodes": ["node-h100"]},
            {"name": "rack-al", "limit_w": 1400, "nodes": ["node-a100", "node-l4"]},
        ],
    }
]


def _cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenllm.cli.main", *args, "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def config_path(make_config: Any) -> Path:
    return make_config(power_domains=TREE)


def test_a_rack_cut_from_the_cli_is_held_by_the_real_gpus(
    config_path, controller, fleet, wait
) -> None:
    config = load_cluster_config(config_path)
    h100 = next(a for a in fleet.agents if a.node == "node-h100")
    wait(lambda: len(controller.shell.nodes["node-h100"].gpus) == 4, 20, "the H100 node")
    out = _cli(config_path, "budget", "set", "--domain", "rack-h", "900", "--json")
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert (reply["domain"], reply["budget_w"], reply["shortfall_w"]) == ("rack-h", 900, 0)
    wait(lambda: sum(g.power_limit_w() for g in h100.gpus) <= 900 + 1e-6, 20, "rack-h under 900 W")
    with ClusterClient(config) as client:
        status = client.get_status()
    rack = {d.name: d for d in status.domains}["rack-h"]
    assert rack.limit_w == 900 and rack.accounted_power_limit_w <= 900 + 1e-6 and rack.gpus == 4
    out = _cli(config_path, "status", "--json")
    domains = {d["name"]: d for d in json.loads(out.stdout)["domains"]}
    assert domains["rack-h"]["limit_w"] == 900 and domains["rack-al"]["parent"] == "site"
    port = config.controller.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'greenllm_domain_limit_watts{domain="rack-h"} 900.0' in text
    # one clear line for a domain that does not exist or a cut below the GPUs' minimums
    out = _cli(config_path, "budget", "set", "--domain", "rack-x", "900")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "no power domain 'rack-x'" in out.stderr
    out = _cli(config_path, "budget", "set", "--domain", "rack-h", "100")
    assert out.returncode == 1 and "minimum power limits" in out.stderr
