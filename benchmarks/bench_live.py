"""Live cluster: max-throughput against uniform on the embedded cluster, from one run.

The embedded cluster comes up on Ray; two training jobs run (tiny GPT-2, CPU shards paced
by their simulated GPUs) under a tight budget. Each policy holds the cluster for one
window after a settling period; per window the jobs' measured work and energy give
throughput and J/sample. Printed as ratios max-throughput / uniform.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import yaml

from greenllm.config import load_cluster_config
from greenllm.jobspec import JobSpec
from greenllm.rpc.client import ClusterClient
from scheduler.runtime import lifecycle
from scheduler.runtime.demo import demo_config

REPO = Path(__file__).resolve().parents[1]
BUDGET_W = 1800.0
SETTLE_S = 15.0
WINDOW_S = 45.0
POLICIES = ("max-throughput", "uniform")
JOBS = [
    {"name": "bench-a", "kind": "train", "shards": 2, "gpu_types": ["H100-SXM"], "priority": 2,
     "train": {"batch_size": 8, "seq_len": 64, "steps": 1000000}},
    {"name": "bench-b", "kind": "train", "shards": 2, "gpu_types": ["A100-SXM4"], "priority": 1,
     "train": {"batch_size": 8, "seq_len": 64, "steps": 1000000}},
]  # fmt: skip


def _totals(client: ClusterClient) -> tuple[float, float]:
    jobs = client.list_jobs()
    return sum(j.work_units for j in jobs), sum(j.energy_j for j in jobs)


def _window(client: ClusterClient, policy: str) -> tuple[float, float]:
    client.set_policy(policy)
    time.sleep(SETTLE_S)
    work0, energy0 = _totals(client)
    t0 = time.monotonic()
    time.sleep(WINDOW_S)
    work1, energy1 = _totals(client)
    seconds = time.monotonic() - t0
    work, energy = work1 - work0, energy1 - energy0
    return work / seconds, energy / work if work > 0 else float("inf")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="greenllm-bench-") as tmp:
        path = demo_config(REPO / "cluster.yaml", Path(tmp))
        data = yaml.safe_load(path.read_text())
        data["budget"]["budget_w"] = BUDGET_W
        path.write_text(yaml.safe_dump(data))
        config = load_cluster_config(path)
        up = lifecycle.up(path, config, log=lambda m: print(m, flush=True))
        print(f"cluster up in {up.startup_s:.1f} s; budget {BUDGET_W:g} W", flush=True)
        try:
            with ClusterClient(config) as client:
                for job in JOBS:
                    client.submit_job(JobSpec.model_validate(job).model_dump_json())
                deadline = time.monotonic() + 180
                while time.monotonic() < deadline and not all(
                    j.state == "running" and j.throughput > 0 for j in client.list_jobs()
                ):
                    time.sleep(2)
                results = {p: _window(client, p) for p in POLICIES}
        finally:
            lifecycle.down(config)
    for policy, (rate, jpu) in results.items():
        print(f"{policy:>15}: {rate:7.2f} samples/s  {jpu:8.2f} J/sample")
    (mt_rate, mt_jpu), (u_rate, u_jpu) = results["max-throughput"], results["uniform"]
    print(f"max-throughput / uniform: throughput {mt_rate / u_rate:.3f}x, ", end="")
    print(f"J/sample {mt_jpu / u_jpu:.3f}x")
