"""Train a GPT-2 with DistributedDataParallel: greenllm's built-in trainer, an ordinary script.

Run it like any torchrun script (``torchrun --nproc-per-node 2 train_gpt2.py``), on its own
(one rank), or as a greenllm job (each rank gets torchrun's environment; a training job
without ``train.entrypoint`` runs this file with its ``train`` settings)::

    python train_gpt2.py --model tiny --data ./my-texts --steps 300

- Model: a built-in config (``tiny``, ``small``) from seeded random weights, or a local
  model folder to fine-tune.
- Data: every ``*.txt`` file of ``--data`` (a file or a folder), or greenllm's shipped corpus.
  Each step draws ``batch_size x world_size`` windows with a generator seeded by the step,
  so a resumed run sees the data it would have seen.
- Heterogeneous ranks: each step the ranks all-reduce their :func:`greenllm.job.share` (and
  a stop flag); the global batch is split in those proportions and each rank's loss is
  weighted by its part, so DDP's gradient average is the global batch's mean gradient
  whatever the split.
- Checkpoints: rank 0 writes ``ckpt-<step>.pt`` (model, AdamW, step) atomically to
  ``$GREENLLM_CHECKPOINT_DIR`` (else ``--checkpoint-dir``) every ``--checkpoint-interval``
  steps, at the end and on SIGTERM (all ranks stop after the same step); a new run resumes
  from the newest one, read by rank 0 and broadcast (no shared storage needed to read).
- Progress: :func:`greenllm.job.report` after every step (samples, tokens, step).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import greenllm.job
from greenllm.workloads import (
    BUILTINS,
    ByteTokenizer,
    build_untrained,
    causal_lm_loss,
    corpus_ids,
    load_model,
    random_batch,
)

KEEP_CHECKPOINTS = 2
CHECKPOINT_NAME = re.compile(r"^ckpt-(\d{8,})\.pt$")
MAX_GRAD_NORM = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", default="tiny", help="tiny, small, or a local model folder")
    p.add_argument("--data", type=Path, help="a text file or a folder of *.txt files")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per step per rank")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps in all")
    p.add_argument("--checkpoint-interval", type=int, default=50, help="steps between saves")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights and the data")
    p.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"),
                   help="used when $GREENLLM_CHECKPOINT_DIR is not set")  # fmt: skip
    args = p.parse_args(argv)
    if min(args.batch_size, args.seq_len, args.steps, args.checkpoint_interval) < 1:
        p.error("--batch-size, --seq-len, --steps and --checkpoint-interval must be >= 1")
    return args


def batch_split(shares: list[float], global_batch: int) -> list[int]:
    """``global_batch`` windows in proportion to ``shares``, at least one each (largest
    remainder, ties to the lower rank: every rank computes the same split).

    A rank's count is its share of the whole batch, not one window plus its share of the
    rest: that would give a slow rank with a small share up to one window too many, and
    make every other rank wait for it at each gradient exchange."""
    n = len(shares)
    shares = [s if s > 0 and math.isfinite(s) else 1.0 / n for s in shares]
    total = math.fsum(shares)
    ideal = [global_batch * s / total for s in shares]
    counts = [max(1, math.floor(x)) for x in ideal]
    while sum(counts) < global_batch:  # the largest shortfalls first
        counts[max(range(n), key=lambda r: (ideal[r] - counts[r], -r))] += 1
    while sum(counts) > global_batch:  # the minimum of one overshot: the smallest shortfalls
        counts[
            min((r for r in range(n) if counts[r] > 1), key=lambda r: (ideal[r] - counts[r], r))
        ] -= 1
    return counts


def build_model(name: str, seed: int) -> tuple[torch.nn.Module, Any]:
    """A built-in config from seeded random weights, or a model folder to fine-tune."""
    if name in BUILTINS:
        return build_untrained(BUILTINS[name], seed=seed), ByteTokenizer()
    loaded = load_model(name)
    return loaded.model, loaded.tokenizer


def load_text_ids(data: Path | None, tokenizer: Any) -> torch.Tensor:
    """Token ids of ``data`` (a file, or every ``*.txt`` below a folder), or the corpus."""
    if data is None:
        return corpus_ids(tokenizer, "train")
    files = sorted(data.rglob("*.txt")) if data.is_dir() else [data]
    if not files or not all(f.is_file() for f in files):
        raise SystemExit(f"--data {data}: no text files there")
    text = "\n\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
    return torch.tensor(tokenizer.encode(text), dtype=torch.long)


def checkpoint_steps(folder: Path) -> list[int]:
    """Steps of the whole checkpoints in ``folder``, ascending."""
    if not folder.is_dir():
        return []
    return sorted(int(m[1]) for p in folder.iterdir() if (m := CHECKPOINT_NAME.match(p.name)))


def save_checkpoint(folder: Path, step: int, model: torch.nn.Module, opt: Any) -> None:
    """Write ``ckpt-<step>.pt`` atomically; keep the newest :data:`KEEP_CHECKPOINTS`."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"ckpt-{step:08d}.pt"
    tmp = folder / f".{final.name}.{os.getpid()}.tmp"
    with tmp.open("wb") as f:
        torch.save({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict()}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    for old in checkpoint_steps(folder)[:-KEEP_CHECKPOINTS]:
        (folder / f"ckpt-{old:08d}.pt").unlink(missing_ok=True)


def resume(folder: Path, model: torch.nn.Module, opt: Any, rank: int) -> int:
    """Rank 0 reads the newest checkpoint and broadcasts it; returns its step (0: none)."""
    box: list[Any] = [None]
    if rank == 0:
        steps = checkpoint_steps(folder)
        if steps:
            path = folder / f"ckpt-{steps[-1]:08d}.pt"
            box[0] = torch.load(path, map_location="cpu", weights_only=True)
    dist.broadcast_object_list(box, src=0)
    state = box[0]
    if state is None:
        return 0
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    return int(state["step"])


def main(argv: list[str] | None = None) -> int:
    """Train; returns the exit status."""
    args = parse_args(argv)
    stop = {"asked": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(asked=True))
    cuda = torch.cuda.is_available()
    if "RANK" not in os.environ:  # run on its own: a world of one
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="0")
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=120))
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cpu")
    if cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    model, tokenizer = build_model(args.model, args.seed)
    model = model.to(device).train()
    ids = load_text_ids(args.data, tokenizer)
    if ids.numel() <= args.seq_len:
        raise SystemExit(f"need more than {args.seq_len} tokens of data, have {ids.numel()}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    folder = greenllm.job.checkpoint_dir() or args.checkpoint_dir
    step = start = resume(folder, model, opt, rank)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    if rank == 0:
        print(f"rank 0 of {world}: {args.model} on {device}, resumed from step {start}", flush=True)
    global_batch = args.batch_size * world
    t0 = time.monotonic()
    while step < args.steps:
        table = torch.zeros(world, 2, dtype=torch.float64, device=device)
        table[rank, 0] = greenllm.job.share()
        table[rank, 1] = 1.0 if stop["asked"] else 0.0
        dist.all_reduce(table)
        if table[:, 1].sum().item() > 0:
            break
        counts = batch_split(table[:, 0].tolist(), global_batch)
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        batch = random_batch(ids, global_batch, args.seq_len, gen)
        offset = sum(counts[:rank])
        local = batch[offset : offset + counts[rank]].to(device)
        mean = causal_lm_loss(ddp, local)
        # DDP averages gradients over ranks: weight = part of the global batch x world.
        opt.zero_grad(set_to_none=True)
        (mean * (counts[rank] / global_batch * world)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        opt.step()
        step += 1
        if rank == 0 and (step % args.checkpoint_interval == 0 or step == args.steps):
            save_checkpoint(folder, step, model, opt)
        greenllm.job.report(samples=counts[rank], tokens=counts[rank] * args.seq_len, step=step)
        if rank == 0 and (step % 10 == 0 or step == args.steps):
            rate = (step - start) * global_batch / (time.monotonic() - t0)
            print(f"step {step} loss {mean.item():.4f} {rate:.1f} samples/s", flush=True)
    if rank == 0 and step > start and step % args.checkpoint_interval and step < args.steps:
        save_checkpoint(folder, step, model, opt)
    if rank == 0:
        print(f"{'stopped' if step < args.steps else 'done'} at step {step}", flush=True)
    del ddp  # DDP's reducer alive at destroy_process_group can abort the exit (torch 2.13)
    gc.collect()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
