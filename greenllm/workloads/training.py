"""A small causal-LM training loop: pre-training the built-in models, fine-tuning after
pruning, and (with its own loss) distillation."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from greenllm.workloads.corpus import random_batch

#: ``loss_fn(model, input_ids) -> scalar loss``.
LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]
#: Called after every optimizer step (e.g. to re-apply a pruning mask).
StepHook = Callable[[], None]


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        steps: Optimizer steps.
        batch_size: Sequences per step.
        seq_len: Tokens per sequence.
        lr: Peak learning rate (AdamW), reached after a short warm-up, then cosine decay.
        weight_decay: AdamW weight decay.
        seed: Seeds the batch sampler (and dropout).
        log_every: Print progress to stderr every this many steps (0: never).
    """

    steps: int
    batch_size: int = 8
    seq_len: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.01
    seed: int = 0
    log_every: int = 50


@dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        losses: Training loss at every step.
        duration_s: Wall time, seconds.
        tokens: Tokens seen (steps x batch x seq_len).
    """

    losses: list[float] = field(default_factory=list)
    duration_s: float = 0.0
    tokens: int = 0


def causal_lm_loss(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of a Hugging Face causal LM on ``input_ids``."""
    loss: torch.Tensor = model(input_ids=input_ids, labels=input_ids).loss
    return loss


def _lr_factor(step: int, steps: int) -> float:
    warmup = max(1, steps // 20)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(
    model: nn.Module,
    train_ids: torch.Tensor,
    config: TrainConfig,
    loss_fn: LossFn = causal_lm_loss,
    after_step: StepHook | None = None,
    label: str = "training",
) -> TrainResult:
    """Train ``model`` in place on random windows of ``train_ids``.

    Args:
        model: The model; only parameters with ``requires_grad`` are updated.
        train_ids: 1-D token ids to sample windows from.
        config: Steps, batch shape, learning rate, seed.
        loss_fn: The loss of one batch.
        after_step: Called after every optimizer step.
        label: Prefix of the progress lines on stderr.

    Returns:
        The losses and timing of the run.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, config.steps)
    )
    result = TrainResult()
    model.train()
    start_s = time.perf_counter()
    for step in range(config.steps):
        batch = random_batch(train_ids, config.batch_size, config.seq_len, generator)
        loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        if after_step is not None:
            after_step()
        result.losses.append(float(loss.detach()))
        done = step + 1
        if config.log_every and (done % config.log_every == 0 or done == config.steps):
            elapsed_s = time.perf_counter() - start_s
            print(
                f"{label}: step {done}/{config.steps} loss {result.losses[-1]:.3f} "
                f"({elapsed_s:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    model.eval()
    result.duration_s = time.perf_counter() - start_s
    result.tokens = config.steps * config.batch_size * config.seq_len
    return result
