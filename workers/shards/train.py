"""A training shard: one rank of synchronous data-parallel training with checkpoints.

No longer what jobs run (they run ``examples/train/train_gpt2.py``, a DDP script, as a
subprocess per rank: :mod:`workers.shards.rankrun`); kept for ``benchmarks/bench_shards.py``
and its tests.

Every step the ranks agree (one small all-reduce) on each rank's load weight and on
whether to stop. The global batch, ``batch_size x world_size`` windows of the shipped
corpus drawn with a generator seeded by the step, is split between ranks in proportion
to their weights (at least one window each); each rank computes the gradient of its
slice's mean loss scaled by its share of the global batch, and the gradients are summed
across ranks, so the update is the global batch's mean gradient whatever the split.
Checkpoints (rank 0 writes them every ``checkpoint_interval_steps``, at the last step and
when the job is stopped) hold the model, AdamW state and step; a restarted job resumes
from the newest, losing at most ``checkpoint_interval_steps`` steps after a crash and none
after a stop, and because batches depend only on the step it sees the same data it would
have.

With no GPU a rank runs on the CPU and, given its simulated GPU's throughput, is paced
(:mod:`workers.shards.pacing`) after its forward/backward, before the gradient exchange.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from greenllm.errors import ConfigError
from greenllm.jobspec import JobSpec
from greenllm.workloads import (
    BUILTINS,
    ByteTokenizer,
    Tokenizer,
    build_untrained,
    causal_lm_loss,
    corpus_ids,
    load_model,
    random_batch,
)
from workers.shards.checkpoint import Checkpoint, checkpoint_steps, load_checkpoint, save_checkpoint
from workers.shards.pacing import Pacer, reference_throughput

#: Gradient norm clip applied to the global gradient.
MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class TrainProgress:
    """What one rank reports after each step.

    Attributes:
        rank: This rank.
        step: Optimizer steps done by the job.
        samples_done: Training samples consumed by the job (all ranks).
        loss: Mean loss of the step's global batch.
        step_s: Wall time of the whole step on this rank, seconds.
        compute_s: This rank's forward/backward time including pacing, seconds (what
            micro-batch shares equalise).
        local_samples: Samples this rank computed in the step.
    """

    rank: int
    step: int
    samples_done: int
    loss: float
    step_s: float
    compute_s: float
    local_samples: int

    @property
    def local_rate_per_s(self) -> float:
        """This rank's compute rate, samples/s: the load weight that equalises step times."""
        return self.local_samples / self.compute_s if self.compute_s > 0 else 0.0


@dataclass(frozen=True)
class TrainOutcome:
    """How a rank's run ended.

    Attributes:
        step: Optimizer steps done when it ended.
        samples_done: Samples consumed by the job by then.
        resumed_from_step: Checkpoint step it started from (0: from scratch).
        stopped: True when it ended on a stop request before the last step.
        loss: Loss of the last step run (None when none ran).
    """

    step: int
    samples_done: int
    resumed_from_step: int
    stopped: bool
    loss: float | None


def batch_shares(weights: Sequence[float], global_batch: int) -> list[int]:
    """Split ``global_batch`` windows in proportion to ``weights`` (at least 1 each).

    Largest-remainder rounding, ties to the lower rank; the same inputs give the same
    split on every rank.

    Raises:
        ValueError: Fewer windows than ranks, or a weight that is not positive.
    """
    n = len(weights)
    if global_batch < n or any(not w > 0 for w in weights):
        raise ValueError("need at least one window per rank and positive weights")
    rest = global_batch - n
    total = math.fsum(weights)
    ideal = [rest * w / total for w in weights]
    shares = [1 + math.floor(x) for x in ideal]
    order = sorted(range(n), key=lambda r: (-(ideal[r] - math.floor(ideal[r])), r))
    for r in order[: global_batch - sum(shares)]:
        shares[r] += 1
    return shares


def _model_for(name: str, seed: int) -> tuple[nn.Module, Tokenizer]:
    """A built-in from random init (seeded), or a model to fine-tune (local dir...)."""
    if name in BUILTINS:
        return build_untrained(BUILTINS[name], seed=seed), ByteTokenizer()
    loaded = load_model(name)
    return loaded.model, loaded.tokenizer


class TrainShard:
    """One rank of a training job.

    Args:
        spec: The job (kind ``train``): a built-in model (``tiny``, ``small``) is trained
            from random init, any other (``smollm2-135m``, a local directory) fine-tuned.
        rank: This rank, 0 to ``world_size - 1``.
        world_size: Ranks in the job.
        init_method: torch.distributed rendezvous: ``file:///shared/dir/rdzv`` (one
            machine or shared storage; a fresh file per start of the job) or
            ``tcp://HOST:PORT`` (rank 0 listens).
        checkpoint_dir: Where checkpoints live (shared by all ranks).
        sim_throughput: The simulated GPU's throughput now, units/s; when given, the
            rank is paced by it (CPU shards).
        progress: Called on this rank after every step.
        device: torch device (default: ``cuda`` when available, else ``cpu``); NCCL on
            CUDA, gloo on the CPU.
        timeout_s: How long a collective waits for the other ranks, seconds.
        seed: Seeds the initial weights and the data order.

    Raises:
        ConfigError: ``spec`` is not a training job, or its ``seq_len`` exceeds the
            model's context.
    """

    def __init__(
        self,
        spec: JobSpec,
        rank: int,
        world_size: int,
        init_method: str,
        checkpoint_dir: Path,
        sim_throughput: Callable[[], float] | None = None,
        progress: Callable[[TrainProgress], None] | None = None,
        device: str | None = None,
        timeout_s: float = 120.0,
        seed: int = 0,
    ) -> None:
        if spec.kind != "train":
            raise ConfigError(f"job {spec.name}: a training shard needs kind 'train'")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.spec = spec
        self.rank = rank
        self.world_size = world_size
        self.init_method = init_method
        self.checkpoint_dir = Path(checkpoint_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.timeout_s = timeout_s
        self.seed = seed
        self._progress = progress
        self._stop = threading.Event()
        self._load_weight = 1.0
        self.pacer: Pacer | None = None
        if sim_throughput is not None:
            reference = reference_throughput(spec.workload())
            self.pacer = Pacer(sim_throughput, reference, stop_event=self._stop)
        model, self.tokenizer = _model_for(spec.model, seed)
        self.model = model.to(self.device)
        context = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        seq_len = spec.train_settings.seq_len
        if context and seq_len > context:
            raise ConfigError(
                f"job {spec.name}: train.seq_len {seq_len} exceeds model {spec.model!r} "
                f"context of {context} tokens"
            )
        self.latest: TrainProgress | None = None

    def set_load_weight(self, weight: float) -> None:
        """This rank's share of the global batch, relative to the other ranks' weights.

        Takes effect at the next step (all ranks agree on it first). Giving every rank
        its measured :attr:`TrainProgress.local_rate_per_s` as weight equalises the ranks'
        compute times, so no rank waits for a slower one at the gradient exchange.

        Raises:
            ValueError: ``weight`` is not positive and finite.
        """
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"load weight must be positive and finite, not {weight}")
        self._load_weight = weight

    def stop(self) -> None:
        """Ask the job to stop: all ranks stop together after the current step."""
        self._stop.set()

    def run(self) -> TrainOutcome:
        """Join the job, resume from the newest checkpoint, train to ``steps`` or a stop.

        Raises:
            GreenllmError: A checkpoint cannot be read.
            RuntimeError / DistBackendError: A peer rank failed or timed out.
        """
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            init_method=self.init_method,
            rank=self.rank,
            world_size=self.world_size,
            timeout=timedelta(seconds=self.timeout_s),
        )
        try:
            return self._train()
        finally:
            dist.destroy_process_group()

    # -- the loop ---------------------------------------------------------------------
    def _train(self) -> TrainOutcome:
        settings = self.spec.train_settings
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=settings.learning_rate)
        step, samples_done = self._resume(optimizer)
        resumed_from = step
        ids = corpus_ids(self.tokenizer, "train")
        global_batch = settings.batch_size * self.world_size
        loss_value: float | None = None
        self.model.train()
        while step < settings.steps:
            start_s = time.monotonic()
            weights, stop = self._agree()
            if stop:
                if step > resumed_from and step % settings.checkpoint_interval_steps:
                    self._save(step, samples_done, optimizer)
                break
            shares = batch_shares(weights, global_batch)
            offset = sum(shares[: self.rank])
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            batch = random_batch(ids, global_batch, settings.seq_len, generator)
            local = batch[offset : offset + shares[self.rank]].to(self.device)
            compute_start_s = time.monotonic()
            share = shares[self.rank] / global_batch
            loss = causal_lm_loss(self.model, local) * share
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.pacer is not None:
                self.pacer.pace(shares[self.rank], time.monotonic() - compute_start_s)
            compute_s = time.monotonic() - compute_start_s
            loss_value = self._all_reduce_gradients(params, loss.detach())
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            optimizer.step()
            step += 1
            samples_done += global_batch
            if step % settings.checkpoint_interval_steps == 0 or step == settings.steps:
                self._save(step, samples_done, optimizer)
            self.latest = TrainProgress(
                rank=self.rank,
                step=step,
                samples_done=samples_done,
                loss=loss_value,
                step_s=time.monotonic() - start_s,
                compute_s=compute_s,
                local_samples=shares[self.rank],
            )
            if self._progress is not None:
                self._progress(self.latest)
        self.model.eval()
        return TrainOutcome(
            step=step,
            samples_done=samples_done,
            resumed_from_step=resumed_from,
            stopped=step < settings.steps,
            loss=loss_value,
        )

    def _save(self, step: int, samples_done: int, optimizer: torch.optim.Optimizer) -> None:
        """Rank 0 writes the checkpoint of ``step`` (the ranks' states are identical)."""
        if self.rank == 0:
            state = Checkpoint(step, samples_done, self.model.state_dict(), optimizer.state_dict())
            save_checkpoint(self.checkpoint_dir, state)

    def _resume(self, optimizer: torch.optim.Optimizer) -> tuple[int, int]:
        """Load the newest checkpoint rank 0 sees; returns (step, samples done)."""
        newest = checkpoint_steps(self.checkpoint_dir)
        chosen = torch.tensor([newest[-1] if newest else 0], device=self.device)
        dist.broadcast(chosen, src=0)
        step = int(chosen.item())
        if step == 0:
            return 0, 0
        checkpoint = load_checkpoint(self.checkpoint_dir, step, self.device)
        self.model.load_state_dict(checkpoint.model_state)
        optimizer.load_state_dict(checkpoint.optimizer_state)
        return checkpoint.step, checkpoint.samples_done

    def _agree(self) -> tuple[list[float], bool]:
        """Every rank's load weight, and whether any rank asked to stop."""
        table = torch.zeros(self.world_size, 2, dtype=torch.float64, device=self.device)
        table[self.rank, 0] = self._load_weight
        table[self.rank, 1] = 1.0 if self._stop.is_set() else 0.0
        dist.all_reduce(table)
        return table[:, 0].tolist(), bool(table[:, 1].sum().item() > 0)

    def _all_reduce_gradients(self, params: list[nn.Parameter], loss: torch.Tensor) -> float:
        """Sum gradients and the share-weighted loss over ranks; returns the global loss."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.reshape(1).to(grads[0].dtype)])
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n
        return float(flat[-1].item())
