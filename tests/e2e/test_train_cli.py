"""Users' own training scripts on the live cluster, through the CLI as a user runs them.

One cluster for the module (three one-GPU nodes, so a 2-rank job always spans 2 nodes, and
a third to resume on). The scripts are written into a temporary folder outside the
repository and shipped with `greenllm submit --working-dir` (uploaded to Ray's GCS):
(1) a plain DDP script with no greenllm import: its throughput is unknown, its energy
metered; (2) a script calling greenllm.job.report: samples/s and J/sample; (3) the node of
one rank is killed and the job resumes from its own checkpoint in GREENLLM_CHECKPOINT_DIR.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_run import REPO, greenllm, ok, wait_for

from scheduler.core.lifecycle import JobPhase
from scheduler.runtime.raynodes import RuntimeRecord, free_port

JOB_PHASES = {p.value for p in JobPhase}
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]
NODES = ("node-a", "node-b", "node-c")

PLAIN = """
import gc, os, sys, time
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
print(f"rank {rank} of {world} via {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
      flush=True)
torch.manual_seed(0)
model = DDP(torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(1, int(sys.argv[1]) + 1):
    loss = model(torch.randn(32, 64)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    time.sleep(0.05)
    if step % 50 == 0:
        print(f"step {step} loss {loss.item():.4f}", flush=True)
del model
gc.collect()  # a DDP reducer alive at destroy_process_group can abort the exit
dist.destroy_process_group()
print("finished", flush=True)
"""

REPORTING = """
import gc, sys, time
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
import greenllm.job

dist.init_process_group("gloo")
model = DDP(torch.nn.Linear(64, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(1, int(sys.argv[1]) + 1):
    batch = max(1, round(64 * greenllm.job.share()))
    loss = model(torch.randn(batch, 64)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    time.sleep(0.02)
    greenllm.job.report(samples=batch, step=step)
del model
gc.collect()  # a DDP reducer alive at destroy_process_group can abort the exit
dist.destroy_process_group()
"""

RESUMING = """
import os, time
from pathlib import Path
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
import greenllm.job

dist.init_process_group("gloo")
rank = dist.get_rank()
folder = Path(os.environ["GREENLLM_CHECKPOINT_DIR"])
model = torch.nn.Linear(16, 1)
start = 0
saved = sorted(folder.glob("ckpt-*.pt"))
if saved:
    state = torch.load(saved[-1], weights_only=True)
    model.load_state_dict(state["model"])
    start = int(state["step"])
print(f"rank {rank} resumed from step {start}", flush=True)
ddp = DDP(model)
opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
for step in range(start + 1, 10**9):
    loss = ddp(torch.randn(16, 16)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    time.sleep(0.1)
    if rank == 0 and step % 10 == 0:
        tmp = folder / ".ckpt.tmp"
        torch.save({"model": model.state_dict(), "step": step}, tmp)
        os.replace(tmp, folder / f"ckpt-{step:08d}.pt")
    greenllm.job.report(samples=16, step=step)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("train-cli")
    data = yaml.safe_load((REPO / "cluster.yaml").read_text())
    data["nodes"] = [{"name": n, "gpus": [{"type": "A100-SXM4", "count": 1}]} for n in NODES]
    data["budget"] = {"budget_w": 1000, "reserve_w": 50}
    data["state_dir"] = str(work / "state")
    data["controller"] = {"address": f"127.0.0.1:{free_port()}", "metrics_port": free_port()}
    config = work / "cluster.yaml"
    config.write_text(yaml.safe_dump(data))
    try:
        doc = json.loads(ok(greenllm("up", "--config", str(config), "--json", timeout_s=240)))
        assert doc["nodes"] == list(NODES)
        yield config
    finally:
        greenllm("down", "--config", str(config), timeout_s=180)


@pytest.fixture
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project folder, outside the repository."""
    folder = tmp_path_factory.mktemp("my-project")
    assert not folder.resolve().is_relative_to(REPO)
    return folder


def submit(cluster: Path, project: Path, name: str, *command: str) -> str:
    out = ok(greenllm("submit", "--name", name, "--shards", "2", "--working-dir", str(project),
                      "--config", str(cluster), "--json", "--", *command))  # fmt: skip
    job_id: str = json.loads(out)["id"]
    return job_id


def status(cluster: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ok(greenllm("status", "--config", str(cluster), "--json")))
    return doc


def job_doc(cluster: Path, job_id: str) -> dict[str, Any]:
    jobs = json.loads(ok(greenllm("jobs", "--config", str(cluster), "--json")))["jobs"]
    found: dict[str, Any] = next(j for j in jobs if j["id"] == job_id)
    return found


def busy_nodes(cluster: Path) -> set[str]:
    doc = status(cluster)
    return {
        n["name"]
        for n in doc["nodes"]
        if n["connected"]
        for g in n["gpus"]
        if g["utilization_pct"] > 0
    }


def rank_output(cluster: Path, job_id: str, rank: int) -> str:
    args = ("logs", job_id, "--rank", str(rank), "--config", str(cluster))
    return ok(greenllm(*args))


def test_plain_ddp_script_is_metered_with_unknown_throughput(cluster: Path, project: Path) -> None:
    (project / "train.py").write_text(PLAIN)
    job_id = submit(cluster, project, "plain-ddp", "python", "train.py", "400")
    follow = subprocess.Popen(
        [sys.executable, "-m", "greenllm.cli.main", "logs", job_id, "--rank", "1", "--follow",
         "--config", str(cluster)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:

        def running_on_two_nodes() -> bool:
            job = next(j for j in status(cluster)["jobs"] if j["id"] == job_id)
            return job["state"] == "running" and len(busy_nodes(cluster)) == 2

        wait_for(running_on_two_nodes, 240, "the job running on two nodes")
        job = next(j for j in status(cluster)["jobs"] if j["id"] == job_id)
        assert job["throughput"] is None  # never reported: unknown, not 0
        wait_for(lambda: job_doc(cluster, job_id)["state"] == "done", 240, "the job to finish")
        done = job_doc(cluster, job_id)
        assert done["throughput"] is None and done["joules_per_unit"] is None
        assert done["energy_j"] > 0 and done["co2e_g"] > 0  # metered from its GPUs
        assert "unknown" in ok(greenllm("jobs", "--config", str(cluster)))  # the table
        out, err = follow.communicate(timeout=60)  # --follow ends with the job
        assert follow.returncode == 0, err
        assert "rank 1 of 2 via 127.0.0.1:" in out and "finished" in out
    finally:
        if follow.poll() is None:
            follow.kill()
    zero = rank_output(cluster, job_id, 0)
    assert "rank 0 of 2" in zero and "step 400 loss" in zero and "finished" in zero
    events = json.loads(ok(greenllm("logs", job_id, "--events", "--json", "--config",
                                    str(cluster))))["events"]  # fmt: skip
    # the job's phase changes only: its log also holds shard transitions and cpu_bound events
    phases = [e["kind"] for e in events if e["entity"] == "job" and e["kind"] in JOB_PHASES]
    assert events[0]["kind"] == "submitted" and phases[-1] == "done", phases


def test_reporting_script_shows_samples_per_second_and_joules_per_sample(
    cluster: Path, project: Path
) -> None:
    (project / "train.py").write_text(REPORTING)
    job_id = submit(cluster, project, "reporting", "python", "train.py", "100000")

    def reporting() -> bool:
        job = job_doc(cluster, job_id)
        return job["state"] == "running" and (job["throughput"] or 0) > 0 and job["steps"] > 20

    wait_for(reporting, 240, "the job's own throughput")
    job = job_doc(cluster, job_id)
    assert job["unit"] == "samples" and job["work_units"] > 0
    assert job["joules_per_unit"] == pytest.approx(job["energy_j"] / job["work_units"])
    assert job["joules_per_unit"] > 0
    assert "samples/s" in ok(greenllm("jobs", "--config", str(cluster)))  # the table
    assert (
        json.loads(ok(greenllm("cancel", job_id, "--config", str(cluster), "--json")))["state"]
        == "cancelled"
    )
    wait_for(lambda: not busy_nodes(cluster), 60, "the GPUs to be free again")


def kill_tree(root: int) -> None:
    """SIGKILL ``root`` and every process below it, as a machine failure would."""
    table = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in table.splitlines():
        pid, ppid = (int(x) for x in line.split())
        children.setdefault(ppid, []).append(pid)
    doomed, todo = [], [root]
    while todo:
        pid = todo.pop()
        doomed.append(pid)
        todo.extend(children.get(pid, []))
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_node_loss_resumes_from_the_jobs_own_checkpoint(cluster: Path, project: Path) -> None:
    (project / "train.py").write_text(RESUMING)
    job_id = submit(cluster, project, "resuming", "python", "train.py")
    state_dir = Path(yaml.safe_load(cluster.read_text())["state_dir"])
    checkpoints = state_dir / "checkpoints" / job_id  # GREENLLM_CHECKPOINT_DIR
    wait_for(lambda: len(list(checkpoints.glob("ckpt-*.pt"))) >= 2, 240, "two checkpoints")
    # a reading may catch a rank between steps (its GPU idle): wait until both show at work
    wait_for(lambda: len(busy_nodes(cluster)) == 2, 60, "both ranks at work")
    victims = sorted(busy_nodes(cluster))
    assert len(victims) == 2, victims
    record = RuntimeRecord.load(state_dir)
    assert record is not None
    kill_tree(record.raylet_pids[victims[0]])  # the machine is gone: raylet, agent, rank
    newest = max(int(p.stem.split("-")[1]) for p in checkpoints.glob("ckpt-*.pt"))

    def resumed() -> bool:
        job = job_doc(cluster, job_id)
        return job["restarts"] >= 1 and job["state"] == "running" and job["steps"] > newest

    wait_for(resumed, 300, "the job to run again on the nodes left")
    left = set(NODES) - {victims[0]}
    wait_for(lambda: busy_nodes(cluster) == left, 60, f"the ranks at work on {sorted(left)}")
    text = rank_output(cluster, job_id, 0)
    assert "rank 0 resumed from step 0" in text  # its first start
    assert "[greenllm] generation" in text  # the output of the next start follows
    last = text.rsplit("[greenllm] generation", 1)[1]
    resumed_from = int(last.split("resumed from step ")[1].split()[0])
    assert resumed_from >= newest > 0  # its own checkpoint, not from scratch
    ok(greenllm("cancel", job_id, "--config", str(cluster)))
