"""A controller and the three simulated agents of the shipped cluster.yaml, on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from greenllm.config import ClusterConfig
from greenllm.devices.catalog import get_spec
from greenllm.rpc.client import ClusterClient

TRAIN_H100 = {"name": "train-h100", "kind": "train", "shards": 4, "gpu_types": ["H100-SXM"]}
INFER_A100 = {"name": "infer-a100", "kind": "infer", "shards": 4, "gpu_types": ["A100-SXM4"]}
INFER_L4 = {"name": "infer-l4", "kind": "infer", "shards": 4, "gpu_types": ["L4"]}


def _min_limits_w(config: ClusterConfig) -> list[float]:
    return [get_spec(t).min_power_limit_w for _, _, t in config.gpu_types()]


def _settled(client: ClusterClient, fleet, usable_w: float) -> bool:
    status = client.get_status()
    no_pending = all(g.pending_power_limit_w == 0 for n in status.nodes for g in n.gpus)
    return no_pending and sum(fleet.limits_w()) <= usable_w + 1e-6


class LimitSampler:
    """Records the sum of every agent's power limits every 2 ms on a thread."""

    def __init__(self, fleet) -> None:
        self.fleet = fleet
        self.max_sum_w = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.max_sum_w = max(self.max_sum_w, sum(self.fleet.limits_w()))
            time.sleep(0.002)

    def __enter__(self) -> LimitSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(2)


@pytest.mark.timeout(60)
def test_status_lists_every_gpu(config_path: Path, config, controller, fleet, wait) -> None:
    with ClusterClient(config) as client:
        wait(
            lambda: all(n.connected and not n.stale for n in client.get_status().nodes),
            10,
            "agents",
        )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "greenllm.cli.main",
            "status",
            "--json",
            "--config",
            str(config_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    doc = json.loads(out.stdout)
    assert doc["budget_w"] == 2800 and doc["policy"] == config.policy
    assert isinstance(doc["power_w"], float) and doc["power_w"] > 0
    listed = [(n["name"], g["index"], g["type"]) for n in doc["nodes"] for g in n["gpus"]]
    assert listed == config.gpu_types()
    for gpu in (g for n in doc["nodes"] for g in n["gpus"]):
        assert {"type", "power_limit_w", "power_w", "sm_clock_mhz"} <= gpu.keys()
    assert doc["jobs"] == []


@pytest.mark.timeout(90)
def test_budget_change_reaches_every_agent_within_budget(config, controller, fleet, wait) -> None:
    with ClusterClient(config) as client:
        client.set_policy("uniform")  # budget split evenly: every GPU's limit moves with it
        client.set_budget(4800)  # above the summed TDP: every busy GPU may run at its max
        for spec in (TRAIN_H100, INFER_A100, INFER_L4):
            client.submit_job(json.dumps(spec))
        wait(lambda: all(j.state == "running" for j in client.list_jobs()), 10, "placements")
        tdp_w = [get_spec(t).tdp_w for _, _, t in config.gpu_types()]
        wait(lambda: fleet.limits_w() == tdp_w, 15, "every GPU at its max")

        applied_before = [a.commands_applied for a in fleet.agents]
        with LimitSampler(fleet) as cut:
            client.set_budget(1500)
            wait(lambda: _settled(client, fleet, 1400), 15, "the cut to settle")
        assert cut.max_sum_w <= 4700 + 1e-6
        assert all(
            after > before
            for after, before in zip(
                [a.commands_applied for a in fleet.agents], applied_before, strict=True
            )
        ), "every agent gets commands"
        assert client.get_status().accounted_power_limit_w <= 1400 + 1e-6

        with LimitSampler(fleet) as rise:
            client.set_budget(2800)
            time.sleep(1.0)
            wait(lambda: _settled(client, fleet, 2700), 15, "the raise to settle")
        assert rise.max_sum_w <= 2700 + 1e-6
        assert sum(fleet.limits_w()) > 2600, "the raise gave power back"


@pytest.mark.timeout(90)
def test_failsafe_after_kill9_and_recovery(config, controller_process, fleet, wait) -> None:
    controller_process.start()
    min_limits_w = _min_limits_w(config)
    failsafe_w = [w for a in fleet.agents for w in a.failsafe_limits_w]
    assert sum(failsafe_w) <= config.usable_budget_w() + 1e-6

    def obeying() -> bool:
        return all(a.registered and not a.failsafe_active for a in fleet.agents) and (
            fleet.limits_w() == min_limits_w  # idle GPUs are held at their minimum
        )

    wait(obeying, 20, "the agents to register and obey")
    controller_process.kill9()
    took_s = wait(
        lambda: all(a.failsafe_active for a in fleet.agents),
        config.failsafe.timeout_s + 5,
        "every agent's fail-safe",
    )
    # the agents give up on the controller after the timeout, checking a few times a
    # second; the slack covers a busy machine (the wait above allows it 5 s)
    assert took_s <= config.failsafe.timeout_s + 2.5
    assert fleet.limits_w() == min_limits_w, "the fail-safe never raises a limit"

    controller_process.start()
    wait(obeying, 20, "the agents to re-register and obey again")


@pytest.mark.timeout(90)
def test_failsafe_limits_follow_a_budget_cut(config, controller_process, fleet, wait) -> None:
    """After a cut, an agent that loses the controller lowers its GPUs to its share of the
    *new* budget, not of the config's (and never raises one)."""
    controller_process.start()
    wait(lambda: all(a.registered for a in fleet.agents), 20, "the agents to register")
    usable_w = 1500.0 - config.budget.reserve_w
    with ClusterClient(config) as client:
        client.set_policy("uniform")
        for spec in (TRAIN_H100, INFER_A100, INFER_L4):
            client.submit_job(json.dumps(spec))
        wait(lambda: all(j.state == "running" for j in client.list_jobs()), 10, "placements")
        wait(lambda: sum(fleet.limits_w()) > 2500, 15, "busy GPUs to get their share")
        client.set_budget(1500)
    types = [g.gpu_type for a in fleet.agents for g in a.gpus]
    target = [config.failsafe_limit_w(t, usable_w) for t in types]
    wait(
        lambda: [w for a in fleet.agents for w in a.failsafe_limits_w] == target,
        20,
        "the new fail-safe limits",
    )
    assert sum(target) <= usable_w + 1e-6
    before = fleet.limits_w()
    controller_process.kill9()
    wait(
        lambda: all(a.failsafe_active for a in fleet.agents),
        config.failsafe.timeout_s + 5,
        "every agent's fail-safe",
    )
    assert fleet.limits_w() == [min(b, t) for b, t in zip(before, target, strict=True)]
    assert sum(fleet.limits_w()) <= usable_w + 1e-6
