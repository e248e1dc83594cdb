"""The operator CLI against a live controller, and its Prometheus endpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from greenllm.rpc.client import ClusterClient

pytestmark = pytest.mark.timeout(90)


def _cli(config_path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenllm.cli.main", *args, "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_budget_and_policy_commands(config_path, config, controller) -> None:
    out = _cli(config_path, "budget", "set", "2500", "--reserve", "50")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "budget set to 2500 W (reserve 50 W)"
    out = _cli(config_path, "policy", "set", "uniform", "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == {"policy": "uniform"}
    with ClusterClient(config) as client:
        status = client.get_status()
    assert (status.budget_w, status.reserve_w, status.policy) == (2500, 50, "uniform")

    out = _cli(config_path, "policy", "set", "fastest")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "NOT_FOUND" in out.stderr and "unknown policy 'fastest'" in out.stderr
    out = _cli(config_path, "budget", "set", "100")
    assert out.returncode == 1 and "minimum power limits" in out.stderr


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_prometheus_metrics(config, controller, fleet, wait) -> None:
    port = config.controller.metrics_port
    wait(lambda: _metrics(port)["greenllm_agents_connected"] == 3, 15, "three agents")
    wait(lambda: _metrics(port)["greenllm_stale_nodes"] == 0, 15, "fresh telemetry")
    m = _metrics(port)
    assert m["greenllm_budget_watts"] == 2800 and m["greenllm_reserve_watts"] == 100
    assert m["greenllm_cluster_power_watts"] > 0
    assert m["greenllm_headroom_watts"] == pytest.approx(
        2700 - m["greenllm_accounted_power_limit_watts"]
    )
    assert m["greenllm_telemetry_samples_total"] > 0
    limits = [k for k in m if k.startswith("greenllm_gpu_power_limit_watts{")]
    assert len(limits) == 12
    assert 'greenllm_gpu_sm_clock_mhz{gpu="3",node="node-l4",type="L4"}' in m
