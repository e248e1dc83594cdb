"""Training ranks as users' own scripts: two shard hosts ("two nodes") run 2 ranks that meet
over torch.distributed's TCP store on 127.0.0.1; one plain DDP script with no greenllm
import, one that reports its progress; their output comes back as log chunks."""

from __future__ import annotations

import socket
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from greenllm.devices.simulated import SimulatedGPU
from greenllm.jobspec import JobSpec
from greenllm.proto.v1 import agent_pb2
from workers.shardhost import ShardHost

pytestmark = pytest.mark.timeout(180)

PLAIN_DDP = textwrap.dedent(
    """
    import gc
    import os
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    env = {k: os.environ[k] for k in ("LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                      "MASTER_PORT", "CUDA_VISIBLE_DEVICES")}
    print(f"rank {rank} of {world} in {os.getcwd()} {env}", flush=True)
    print("checkpoints", os.environ["GREENLLM_CHECKPOINT_DIR"], flush=True)
    torch.manual_seed(rank)
    model = DDP(torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(5):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = model.module.weight.detach().clone()
    seen = [torch.zeros_like(w) for _ in range(world)]
    dist.all_gather(seen, w)
    assert all(torch.equal(seen[0], x) for x in seen)
    print("weights agree after 5 DDP steps", flush=True)
    del model  # a DDP model alive at destroy_process_group can abort the exit (signal 6)
    gc.collect()  # ... also when a reference cycle keeps its reducer
    dist.destroy_process_group()
    """
)

REPORTING = textwrap.dedent(
    """
    import greenllm.job, os, sys
    print("share", greenllm.job.share(), flush=True)
    for step in range(1, 7):
        greenllm.job.report(samples=4, tokens=4 * 16, step=10 + step)
    print("reported", flush=True)
    sys.exit(int(os.environ["RANK"]) + int(sys.argv[1]))
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def spec(name: str, entrypoint: list[str], working_dir: Path) -> str:
    return JobSpec.model_validate(
        {"name": name, "kind": "train", "shards": 2, "simulated_model_params": 1e8,
         "train": {"entrypoint": entrypoint, "working_dir": str(working_dir)}}
    ).model_dump_json()  # fmt: skip


def start_two(hosts: list[ShardHost], job: str, spec_json: str, port: int) -> None:
    for rank, host in enumerate(hosts):
        host.start_rank(
            agent_pb2.StartShard(
                shard_id=f"{job}-{rank}", job_id=job, gpu_indices=[0], spec_json=spec_json,
                generation=3, master_addr="127.0.0.1", master_port=port, world_size=2,
                rank=rank, local_rank=0, local_world_size=1,
            )
        )  # fmt: skip


def output(host: ShardHost, job: str) -> dict[str, bytes]:
    """Every chunk the host ships until none is left, per shard (offsets checked)."""
    out: dict[str, bytes] = {}
    while chunks := host.log_chunks():
        for c in chunks:
            assert c.offset == len(out.get(c.shard_id, b"")) and c.generation == 3
            out[c.shard_id] = out.get(c.shard_id, b"") + c.data
    return out


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[list[ShardHost]]:
    made = [
        ShardHost(node, [SimulatedGPU(gpu_type, 0, node)], tmp_path / node,
                  storage_path=tmp_path / "storage")
        for node, gpu_type in (("node-a", "A100-SXM4"), ("node-b", "L4"))
    ]  # fmt: skip
    yield made
    for host in made:
        host.stop_all(10)


def test_plain_ddp_script_on_two_nodes(tmp_path: Path, hosts: list[ShardHost]) -> None:
    project = tmp_path / "outside-repo" / "project"
    project.mkdir(parents=True)
    (project / "train.py").write_text(PLAIN_DDP)
    start_two(hosts, "plain", spec("plain", ["python", "train.py"], project), free_port())
    wait_for(lambda: all(s.state != "running" for h in hosts for s in h.statuses()), 120, "end")
    states = [s for h in hosts for s in h.statuses()]
    assert [s.state for s in states] == ["done", "done"], states
    assert all(s.work_units == 0 and s.steps == 0 for s in states)  # it never reports
    logs = [output(h, "plain")[f"plain-{r}"].decode() for r, h in enumerate(hosts)]
    for rank, text in enumerate(logs):
        assert f"rank {rank} of 2 in {project}" in text
        assert "'LOCAL_RANK': '0', 'LOCAL_WORLD_SIZE': '1', 'MASTER_ADDR': '127.0.0.1'" in text
        assert "'CUDA_VISIBLE_DEVICES': ''" in text  # simulated GPU: torch on the CPU
        assert f"checkpoints {tmp_path / 'storage' / 'plain'}" in text
        assert "weights agree after 5 DDP steps" in text
    assert not hosts[0].log_chunks()  # all shipped, tails of ended shards dropped


def test_reporting_script_progress_share_and_failure(
    tmp_path: Path, hosts: list[ShardHost]
) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "report.py").write_text(REPORTING)
    for host in hosts:  # the controller's weights: node-a's rank is 3x as fast
        host.set_load_weights({"rep-0": 3.0, "rep-1": 1.0})
    start_two(hosts, "rep", spec("rep", ["python", "report.py", "0"], project), free_port())
    for host in hosts:
        host.set_load_weights({"rep-0": 3.0, "rep-1": 1.0})
    wait_for(lambda: all(s.state != "running" for h in hosts for s in h.statuses()), 60, "end")
    first, second = hosts[0].statuses()[0], hosts[1].statuses()[0]
    assert first.state == "done" and first.work_units == 24 and first.steps == 16
    assert first.extra["tokens"] == 24 * 16
    assert second.state == "failed" and second.work_units == 24  # it exits with status 1
    assert (second.error or "").endswith("training rank exited with status 1: reported")
    assert "share 0.75" in output(hosts[0], "rep")["rep-0"].decode()
    assert "share 0.25" in output(hosts[1], "rep")["rep-1"].decode()


def test_stop_ends_the_rank_and_a_missing_folder_fails(
    tmp_path: Path, hosts: list[ShardHost]
) -> None:
    project = tmp_path / "sleepy"
    project.mkdir()
    (project / "sleep.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(600)\n")
    one = JobSpec.model_validate(
        {"name": "s", "kind": "train",
         "train": {"entrypoint": ["python", "sleep.py"], "working_dir": str(project)}}
    ).model_dump_json()  # fmt: skip
    hosts[0].start("s-0", 0, one)
    wait_for(lambda: b"up" in b"".join(c.data for c in hosts[0].log_chunks()), 30, "output")
    started = time.monotonic()
    assert hosts[0].stop("s-0", timeout_s=20)
    assert time.monotonic() - started < 10
    assert hosts[0].statuses()[0].state == "stopped"

    gone = one.replace(str(project), str(tmp_path / "nowhere"))
    hosts[1].start("s-0", 0, gone)
    wait_for(lambda: hosts[1].statuses()[0].state != "running", 30, "failure")
    assert "does not exist on this node" in (hosts[1].statuses()[0].error or "")
