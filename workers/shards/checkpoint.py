"""Training checkpoints: written atomically (temporary file, fsync, rename), newest kept.

A checkpoint is one ``ckpt-<step>.pt`` file in the job's checkpoint directory holding the
model and optimizer state, the step and the samples done. A crash while writing leaves
only a temporary file, which is never read; the previous checkpoint stays whole.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from greenllm.errors import GreenllmError

#: Checkpoints kept in the directory (older ones are deleted after each save).
KEEP = 2
_NAME = re.compile(r"^ckpt-(\d{8,})\.pt$")


@dataclass(frozen=True)
class Checkpoint:
    """A training state to resume from.

    Attributes:
        step: Optimizer steps done.
        samples_done: Training samples consumed (all shards together).
        model_state: The model's ``state_dict``.
        optimizer_state: The optimizer's ``state_dict``.
    """

    step: int
    samples_done: int
    model_state: dict[str, Any]
    optimizer_state: dict[str, Any]


def checkpoint_path(directory: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives."""
    return directory / f"ckpt-{step:08d}.pt"


def checkpoint_steps(directory: Path) -> list[int]:
    """Steps of the complete checkpoints in ``directory``, ascending (none: empty)."""
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _NAME.match(p.name)))


def save_checkpoint(directory: Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` atomically and delete all but the newest :data:`KEEP`.

    Returns:
        The checkpoint's path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(directory, checkpoint.step)
    tmp = directory / f".{final.name}.{os.getpid()}.tmp"
    doc = {
        "step": checkpoint.step,
        "samples_done": checkpoint.samples_done,
        "model": checkpoint.model_state,
        "optimizer": checkpoint.optimizer_state,
    }
    with tmp.open("wb") as f:
        torch.save(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    for step in checkpoint_steps(directory)[:-KEEP]:
        checkpoint_path(directory, step).unlink(missing_ok=True)
    return final


def load_checkpoint(directory: Path, step: int, map_location: torch.device | str) -> Checkpoint:
    """Read the checkpoint of ``step``.

    Raises:
        GreenllmError: It is missing or unreadable (on several machines the checkpoint
            directory must be shared storage).
    """
    path = checkpoint_path(directory, step)
    try:
        doc = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise GreenllmError(f"{path}: cannot read checkpoint: {exc}") from exc
    return Checkpoint(
        step=int(doc["step"]),
        samples_done=int(doc["samples_done"]),
        model_state=doc["model"],
        optimizer_state=doc["optimizer"],
    )
