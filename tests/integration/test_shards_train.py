"""Training shards: 2-rank gloo data parallelism on the CPU, checkpoints, crash and resume,
and micro-batch shares that leave the update the global mean."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from greenllm.errors import ConfigError
from greenllm.jobspec import JobSpec, TrainSection
from workers.shards.checkpoint import checkpoint_steps
from workers.shards.pacing import reference_throughput
from workers.shards.train import TrainShard, batch_shares

# One rank: prints each step's progress as a JSON line; rank 1 dies abruptly after CRASH_AT.
RANK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from greenllm.jobspec import JobSpec
    from workers.shards.train import TrainShard

    rank, init, ckpt, steps, crash_at, weight = sys.argv[1:7]
    spec = JobSpec.model_validate_json(os.environ["SPEC"])
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"steps": int(steps)})})

    def report(p):
        print(json.dumps(p.__dict__), flush=True)
        if rank == "1" and p.step == int(crash_at):
            os._exit(3)

    shard = TrainShard(spec, int(rank), 2, init, Path(ckpt), progress=report, timeout_s=30)
    shard.set_load_weight(float(weight))
    out = shard.run()
    print(json.dumps({"outcome": out.__dict__}), flush=True)
    """
)

SPEC = JobSpec(
    name="t",
    kind="train",
    model="tiny",
    shards=2,
    train=TrainSection(batch_size=2, seq_len=32, steps=6, checkpoint_interval_steps=2),
)


def run_job(
    tmp_path: Path, tag: str, steps: int, crash_at: int, weights: tuple[float, float]
) -> list[list[dict[str, Any]]]:
    """Run both ranks to the end (or the crash); returns each rank's JSON lines."""
    init = f"file://{tmp_path / f'rdzv-{tag}'}"
    env = {**os.environ, "SPEC": SPEC.model_dump_json()}
    args = [init, str(tmp_path / "ckpt"), str(steps), str(crash_at)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT, str(rank), *args, str(weights[rank])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank in (0, 1)
    ]
    lines: list[list[dict[str, Any]]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        rank = len(lines)
        if not crash_at:
            assert proc.returncode == 0, err[-2000:]
        elif rank == 1:
            assert proc.returncode == 3, err[-2000:]
        else:  # the survivor's next collective fails: its peer is gone
            assert proc.returncode == 1 and "RuntimeError" in err, err[-2000:]
        lines.append([json.loads(line) for line in out.splitlines() if line.startswith("{")])
    return lines


@pytest.mark.timeout(200)
def test_two_ranks_train_checkpoint_crash_and_resume(tmp_path: Path) -> None:
    # Run 1: rank 0 takes 3/4 of each global batch; rank 1's node is lost after step 5,
    # and rank 0 fails at its next step instead of hanging.
    first = run_job(tmp_path, "a", steps=6, crash_at=5, weights=(3.0, 1.0))
    assert [p["step"] for p in first[0]] == [1, 2, 3, 4, 5]
    assert [p["local_samples"] for p in first[0]] == [3] * 5
    assert [p["local_samples"] for p in first[1]] == [1] * 5
    # Both ranks see the same global loss each step.
    assert [p["loss"] for p in first[0]] == pytest.approx([p["loss"] for p in first[1]])
    assert checkpoint_steps(tmp_path / "ckpt") == [2, 4]
    # The update is the global-batch mean whatever the split: a single rank doing all the
    # windows follows the same losses (step 3's loss depends on the first two updates).
    assert [p["loss"] for p in first[0][:3]] == pytest.approx(
        one_rank_losses(tmp_path, 3), rel=1e-4
    )

    # Run 2: even shares; resumes from step 4 (one step lost <= interval 2) and finishes.
    second = run_job(tmp_path, "b", steps=6, crash_at=0, weights=(1.0, 1.0))
    outcome = second[0][-1]["outcome"]
    assert outcome == {
        "step": 6,
        "samples_done": 24,
        "resumed_from_step": 4,
        "stopped": False,
        "loss": second[0][-2]["loss"],
    }
    assert [p["step"] for p in second[1][:-1]] == [5, 6]
    assert second[0][0]["samples_done"] == 20
    # Same state and same data at step 5: the same loss, though the split differs.
    assert second[0][0]["loss"] == pytest.approx(first[0][4]["loss"], rel=1e-5)
    assert checkpoint_steps(tmp_path / "ckpt") == [4, 6]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_rank_losses(tmp_path: Path, steps: int) -> list[float]:
    """Losses of the same job run by a single rank (in this process) doing every window."""
    losses: list[float] = []
    settings = SPEC.train_settings.model_copy(update={"batch_size": 4, "steps": steps})
    shard = TrainShard(
        SPEC.model_copy(update={"train": settings}),
        0,
        1,
        f"file://{tmp_path / 'rdzv-one'}",
        tmp_path / "ckpt-one",
        progress=lambda p: losses.append(p.loss),
        timeout_s=30,
    )
    outcome = shard.run()
    assert (outcome.step, outcome.samples_done) == (steps, 4 * steps)
    return losses


def test_batch_shares() -> None:
    assert batch_shares([1.0, 1.0], 8) == [4, 4]
    assert batch_shares([3.0, 1.0], 4) == [3, 1]
    assert batch_shares([100.0, 1.0], 4) == [3, 1]
    assert batch_shares([1.0, 1.0, 1.0], 8) == [3, 3, 2]
    assert sum(batch_shares([0.3, 2.2, 5.1], 61)) == 61
    with pytest.raises(ValueError):
        batch_shares([1.0, 0.0], 8)
    with pytest.raises(ValueError):
        batch_shares([1.0, 1.0], 1)


@pytest.mark.timeout(60)
def test_stop_over_tcp_rendezvous_ends_after_the_step_and_saves_it(tmp_path: Path) -> None:
    reference = reference_throughput(SPEC.workload())
    settings = SPEC.train_settings.model_copy(update={"steps": 50})
    shard = TrainShard(
        SPEC.model_copy(update={"train": settings}),
        0,
        1,
        f"tcp://127.0.0.1:{free_port()}",
        tmp_path / "ckpt",
        sim_throughput=lambda: reference,
        progress=lambda p: shard.stop() if p.step == 3 else None,
        timeout_s=30,
    )
    outcome = shard.run()
    assert (outcome.step, outcome.stopped, outcome.samples_done) == (3, True, 6)
    assert shard.pacer is not None and shard.pacer.units == 6
    assert shard.latest is not None and shard.latest.local_rate_per_s > 0
    # Stopping saves the step reached besides the interval checkpoints: nothing is lost.
    assert checkpoint_steps(tmp_path / "ckpt") == [2, 3]


def test_rejects_other_kinds_and_sequences_longer_than_the_context(tmp_path: Path) -> None:
    infer = JobSpec(name="i", kind="infer")
    with pytest.raises(ConfigError, match="needs kind 'train'"):
        TrainShard(infer, 0, 1, "file:///unused", tmp_path)
    long = SPEC.model_copy(update={"train": TrainSection(seq_len=512)})
    with pytest.raises(ConfigError, match="seq_len 512 exceeds model 'tiny' context of 256"):
        TrainShard(long, 0, 1, "file:///unused", tmp_path)
