"""The environment contract of a training rank: torchrun's variables, the GPU, greenllm's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from greenllm import job
from greenllm.devices.simulated import SimulatedGPU
from greenllm.errors import GreenllmError
from greenllm.jobspec import JobSpec
from greenllm.proto.v1 import agent_pb2
from workers.shards.rankenv import (
    BUILTIN_TRAINER,
    RankFiles,
    Rendezvous,
    entrypoint_command,
    full_env,
    rank_env,
)

START = agent_pb2.StartShard(
    shard_id="job-7-1", job_id="job-7", gpu_indices=[2], generation=4, master_addr="10.0.0.5",
    master_port=29611, world_size=3, rank=1, local_rank=0, local_world_size=2,
    gpu_uuid="GPU-abc",
)  # fmt: skip


class RealGPU(SimulatedGPU):
    """A GPU that CUDA would see (its UUID is not a simulated one)."""

    def __init__(self) -> None:
        super().__init__("H100-SXM", 0, "n")
        self.uuid = "GPU-1234"


def spec(**train: object) -> JobSpec:
    return JobSpec.model_validate({"name": "j", "kind": "train", "model": "tiny", "train": train})


def test_rendezvous_from_start_and_its_checks() -> None:
    rdzv = Rendezvous.from_start(START)
    assert rdzv == Rendezvous("10.0.0.5", 29611, 3, 1, 0, 2, "GPU-abc")
    for bad in ({"master_addr": ""}, {"master_port": 0}, {"rank": 3}, {"local_rank": 2}):
        body = agent_pb2.StartShard()
        body.CopyFrom(START)
        for key, value in bad.items():
            setattr(body, key, value)
        with pytest.raises(GreenllmError):
            Rendezvous.from_start(body)
    local = Rendezvous.local("job-7", 4, 1, 2)
    assert local.master_addr == "127.0.0.1" and 29500 <= local.master_port < 49500
    assert local == Rendezvous.local("job-7", 4, 1, 2) != Rendezvous.local("job-7", 5, 1, 2)


def test_env_of_a_rank_on_a_simulated_gpu(tmp_path: Path) -> None:
    files = RankFiles.create(tmp_path, "job-7", 1, 4)
    assert files.folder == tmp_path / "ranks" / "job-7" / "1-g4" and files.folder.is_dir()
    env = rank_env(Rendezvous.from_start(START), SimulatedGPU("L4", 2, "n"), "job-7-1", 4,
                   tmp_path / "ck", files, paced=True)  # fmt: skip
    assert {k: env[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")} == {
        "RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "3", "LOCAL_WORLD_SIZE": "2"
    }  # fmt: skip
    assert env["MASTER_ADDR"] == "10.0.0.5" and env["MASTER_PORT"] == "29611"
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # torch runs on the CPU
    assert env[job.CHECKPOINT_DIR_ENV] == str(tmp_path / "ck")
    assert env[job.PROGRESS_FILE_ENV] == str(files.progress)
    assert env[job.SHARE_FILE_ENV] == str(files.share)
    assert env[job.PACE_FILE_ENV] == str(files.pace)
    assert env["GREENLLM_JOB_ID"] == "job-7" and env["GREENLLM_GENERATION"] == "4"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_env_of_a_rank_on_a_real_gpu(tmp_path: Path) -> None:
    files = RankFiles.create(tmp_path, "j", 0, 0)
    env = rank_env(Rendezvous.local("j", 0, 0, 1), RealGPU(), "j-0", 0, tmp_path, files, False)
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-1234"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert job.PACE_FILE_ENV not in env


def test_full_env_puts_this_python_first_and_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = full_env({"RANK": "0"}, {"PATH": "/usr/bin", job.PACE_FILE_ENV: "/stale"})
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert env["OMP_NUM_THREADS"] == "1" and env["RANK"] == "0"
    assert job.PACE_FILE_ENV not in env  # never inherited from the agent's own environment
    assert full_env({}, {"OMP_NUM_THREADS": "4", "PATH": ""})["OMP_NUM_THREADS"] == "4"


def test_entrypoint_command() -> None:
    mine = spec(entrypoint=["python", "train.py", "--epochs", "2"])
    assert entrypoint_command(mine, "/py") == ["/py", "train.py", "--epochs", "2"]
    assert entrypoint_command(spec(entrypoint=["python3", "-m", "x"]), "/py")[0] == "/py"
    assert entrypoint_command(spec(entrypoint=["bash", "run.sh"]), "/py") == ["bash", "run.sh"]
    builtin = entrypoint_command(spec(batch_size=4, seq_len=32, steps=7), "/py")
    assert builtin[:2] == ["/py", str(BUILTIN_TRAINER)] and BUILTIN_TRAINER.is_file()
    args = dict(zip(builtin[2::2], builtin[3::2], strict=True))
    assert args["--model"] == "tiny" and args["--batch-size"] == "4"
    assert args["--seq-len"] == "32" and args["--steps"] == "7"


def test_ranks_on_several_machines_name_the_interface_toward_rank_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workers.shards.rankenv import interface_toward, socket_ifname_env

    assert interface_toward("127.0.0.1") == "lo"
    assert socket_ifname_env("127.0.0.1") == {}  # one machine: nothing to name
    monkeypatch.setattr("workers.shards.rankenv.interface_toward", lambda _a: "eth7")
    assert socket_ifname_env("10.0.0.1") == {
        "GLOO_SOCKET_IFNAME": "eth7",
        "NCCL_SOCKET_IFNAME": "eth7",
    }
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "ib0")  # the operator's choice stands
    assert socket_ifname_env("10.0.0.1") == {"NCCL_SOCKET_IFNAME": "eth7"}
