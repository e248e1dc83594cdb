"""What a training rank is started with: its command, its folder and torchrun's environment.

Every rank of a training job runs the job's entrypoint (or the built-in trainer,
``examples/train/train_gpt2.py``) as its own process with the variables torchrun sets
(RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so an
unmodified ``torch.distributed.init_process_group()`` (``env://``) meets the other ranks
at rank 0's node through torch.distributed's TCP store. On a real GPU
``CUDA_VISIBLE_DEVICES`` names the rank's GPU by UUID; on a simulated one it is empty, so
torch runs on the CPU. The ``GREENLLM_*`` variables lead :mod:`greenllm.job` to the rank's
files (progress, batch share, pace) and the job's checkpoint folder.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

from greenllm import job as progress_api
from greenllm.devices.base import GPU
from greenllm.devices.cuda import cuda_env
from greenllm.errors import GreenllmError
from greenllm.jobspec import JobSpec
from greenllm.proto.v1 import agent_pb2

#: The built-in trainer: an ordinary entrypoint like any user's script.
BUILTIN_TRAINER = Path(__file__).resolve().parents[2] / "examples" / "train" / "train_gpt2.py"
#: First words of an entrypoint that mean "the interpreter the cluster runs on".
PYTHON_WORDS = ("python", "python3")
#: Rendezvous ports of ranks started without one (tests): [BASE, BASE + COUNT).
FALLBACK_PORT_BASE, FALLBACK_PORTS = 29500, 20000


@dataclass(frozen=True)
class Rendezvous:
    """torchrun's contract for one rank (see StartShard in protos/greenllm/v1/agent.proto).

    Attributes:
        master_addr: Rank 0's node address.
        master_port: The TCP store's port there.
        world_size: Ranks in the job.
        rank: This rank.
        local_rank: This rank among the job's ranks on its node.
        local_world_size: The job's ranks on its node.
        gpu_uuid: Its GPU's UUID (empty when simulated).
    """

    master_addr: str
    master_port: int
    world_size: int
    rank: int
    local_rank: int
    local_world_size: int
    gpu_uuid: str = ""

    @classmethod
    def from_start(cls, body: agent_pb2.StartShard) -> Rendezvous:
        """The rendezvous a StartShard command carries.

        Raises:
            GreenllmError: It carries none, or an impossible one.
        """
        if not body.master_addr or not 0 < body.master_port < 65536:
            raise GreenllmError(f"start {body.shard_id}: no rendezvous (master address/port)")
        if not 0 <= body.rank < body.world_size or body.local_rank >= max(1, body.local_world_size):
            raise GreenllmError(
                f"start {body.shard_id}: rank {body.rank} (local {body.local_rank}) outside "
                f"world of {body.world_size} (local {body.local_world_size})"
            )
        return cls(
            body.master_addr[:255],
            body.master_port,
            body.world_size,
            body.rank,
            body.local_rank,
            max(1, body.local_world_size),
            body.gpu_uuid[:255],
        )

    @classmethod
    def local(cls, job_id: str, generation: int, rank: int, world_size: int) -> Rendezvous:
        """All ranks on this machine (127.0.0.1), a port drawn from the job and generation."""
        port = FALLBACK_PORT_BASE + zlib.crc32(f"{job_id}/{generation}".encode()) % FALLBACK_PORTS
        return cls("127.0.0.1", port, world_size, rank, rank, world_size)


@dataclass(frozen=True)
class RankFiles:
    """The files of one rank (one generation) in the agent's state directory.

    Attributes:
        folder: Holds them; also the working directory of a job without ``working_dir``.
        log: The rank's stdout and stderr, interleaved.
        progress: Written by :func:`greenllm.job.report`.
        share: This rank's batch share, for :func:`greenllm.job.share`.
        pace: Simulated GPUs: the GPU's pace now, for :func:`greenllm.job.report`.
    """

    folder: Path
    log: Path
    progress: Path
    share: Path
    pace: Path

    @classmethod
    def create(cls, state_dir: Path, job_id: str, rank: int, generation: int) -> RankFiles:
        """The files of ``rank`` of ``job_id``'s ``generation`` (its folder is made empty of
        progress from an earlier start)."""
        folder = Path(state_dir) / "ranks" / job_id / f"{rank}-g{generation}"
        folder.mkdir(parents=True, exist_ok=True)
        files = cls(
            folder,
            folder / "output.log",
            folder / "progress.json",
            folder / "share.json",
            folder / "pace.json",
        )
        files.progress.unlink(missing_ok=True)
        return files


def entrypoint_command(spec: JobSpec, python: str = sys.executable) -> list[str]:
    """The command a rank of ``spec`` runs (``python`` first words become ``python``).

    Raises:
        GreenllmError: The job names no entrypoint and the built-in trainer is missing.
    """
    train = spec.train_settings
    if train.entrypoint is None:
        if not BUILTIN_TRAINER.is_file():
            raise GreenllmError(
                f"job {spec.name}: the built-in trainer {BUILTIN_TRAINER} is missing; "
                "give train.entrypoint"
            )
        command = ["python", str(BUILTIN_TRAINER), *builtin_args(spec)]
    else:
        command = list(train.entrypoint)
    if command[0] in PYTHON_WORDS:
        command[0] = python
    return command


def builtin_args(spec: JobSpec) -> list[str]:
    """The built-in trainer's arguments from the job's model and ``train`` settings."""
    t = spec.train_settings
    return [
        "--model", spec.model,
        "--batch-size", str(t.batch_size),
        "--seq-len", str(t.seq_len),
        "--steps", str(t.steps),
        "--checkpoint-interval", str(t.checkpoint_interval_steps),
        "--lr", repr(t.learning_rate),
    ]  # fmt: skip


def rank_env(
    rdzv: Rendezvous,
    gpu: GPU,
    shard_id: str,
    generation: int,
    checkpoint_dir: Path,
    files: RankFiles,
    paced: bool,
) -> dict[str, str]:
    """The variables a rank gets on top of its runner's environment.

    Args:
        rdzv: torchrun's contract.
        gpu: Its GPU (a real one is pinned through ``CUDA_VISIBLE_DEVICES``).
        shard_id: ``<job>-<rank>``.
        generation: The job's placement generation.
        checkpoint_dir: ``GREENLLM_CHECKPOINT_DIR``.
        files: The rank's files.
        paced: Whether :func:`greenllm.job.report` paces it by a simulated GPU.
    """
    env = {
        "RANK": str(rdzv.rank),
        "LOCAL_RANK": str(rdzv.local_rank),
        "WORLD_SIZE": str(rdzv.world_size),
        "LOCAL_WORLD_SIZE": str(rdzv.local_world_size),
        "GROUP_RANK": "0",
        "MASTER_ADDR": rdzv.master_addr,
        "MASTER_PORT": str(rdzv.master_port),
        "TORCHELASTIC_RUN_ID": f"{shard_id.rpartition('-')[0]}-g{generation}",
        "PYTHONUNBUFFERED": "1",
        "GREENLLM_JOB_ID": shard_id.rpartition("-")[0],
        "GREENLLM_SHARD_ID": shard_id,
        "GREENLLM_GENERATION": str(generation),
        "GREENLLM_GPU_TYPE": gpu.gpu_type,
        progress_api.CHECKPOINT_DIR_ENV: str(checkpoint_dir),
        progress_api.PROGRESS_FILE_ENV: str(files.progress),
        progress_api.SHARE_FILE_ENV: str(files.share),
    }
    env.update(socket_ifname_env(rdzv.master_addr))
    real = cuda_env([gpu])
    env.update(real or {"CUDA_VISIBLE_DEVICES": ""})
    if paced:
        env[progress_api.PACE_FILE_ENV] = str(files.pace)
    return env


#: ioctl that reads an interface's IPv4 address (Linux).
_SIOCGIFADDR = 0x8915
#: Loopback rendezvous addresses: ranks on one machine need no interface named.
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def interface_toward(address: str) -> str | None:
    """The name of this machine's network interface on the route to ``address`` (an IPv4
    host), or None when it cannot be told (no route, not Linux, IPv6)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((address, 9))  # UDP: no packet is sent
            local = s.getsockname()[0]
            for _, name in socket.if_nameindex():
                request = struct.pack("256s", name.encode()[:15])
                try:
                    got = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, request)
                except OSError:
                    continue  # no IPv4 address on it
                if socket.inet_ntoa(got[20:24]) == local:
                    return name
    except (OSError, ValueError):
        return None
    return None


def socket_ifname_env(master_addr: str) -> dict[str, str]:
    """``GLOO_SOCKET_IFNAME``/``NCCL_SOCKET_IFNAME`` naming the interface toward rank 0,
    unless this process's environment sets them: gloo and NCCL otherwise use the address
    the host name resolves to, which on many machines is 127.0.1.1 (ranks on other
    machines then never connect)."""
    if master_addr in _LOOPBACK:
        return {}
    name = interface_toward(master_addr)
    if name is None:
        return {}
    return {k: name for k in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME") if k not in os.environ}


def full_env(overrides: dict[str, str], base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with ``overrides``; the running
    interpreter's folder first on PATH, and one OpenMP thread per rank unless set (as
    torchrun does)."""
    env = dict(os.environ if base is None else base)
    env.pop(progress_api.PACE_FILE_ENV, None)
    env.update(overrides)
    bin_dir = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join(p for p in (bin_dir, path) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env
