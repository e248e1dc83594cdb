"""The text corpus shipped with greenllm (``greenllm/data/corpus``), and batches from it.

``train`` is what the built-in models learn from; ``heldout`` is never trained on and is
where perplexity is measured. See the corpus README for the sources.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from typing import Literal

import torch

from greenllm.workloads.tokenizer import Tokenizer

Split = Literal["train", "heldout"]
SPLITS: tuple[Split, ...] = ("train", "heldout")


def corpus_text(split: Split) -> str:
    """All text of one split, its files joined in name order by blank lines."""
    if split not in SPLITS:
        raise ValueError(f"unknown corpus split {split!r} (have: {', '.join(SPLITS)})")
    folder = files("greenllm").joinpath("data", "corpus", split)
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".txt"))
    return "\n\n".join(folder.joinpath(n).read_text(encoding="utf-8") for n in names)


def corpus_digest() -> str:
    """SHA-256 of both splits; part of the cache key of models trained on the corpus."""
    h = hashlib.sha256()
    for split in SPLITS:
        h.update(corpus_text(split).encode("utf-8"))
    return h.hexdigest()


def corpus_ids(tokenizer: Tokenizer, split: Split) -> torch.Tensor:
    """One split as a 1-D tensor of token ids (int64)."""
    return torch.tensor(tokenizer.encode(corpus_text(split)), dtype=torch.long)


def random_batch(
    ids: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator
) -> torch.Tensor:
    """``batch_size`` windows of ``seq_len`` consecutive tokens at random offsets.

    Args:
        ids: 1-D token ids, longer than ``seq_len``.
        batch_size: Windows per batch.
        seq_len: Tokens per window.
        generator: Source of the offsets (seed it for reproducible training).

    Returns:
        Tensor of shape ``[batch_size, seq_len]``.
    """
    if ids.numel() <= seq_len:
        raise ValueError(f"need more than {seq_len} tokens, have {ids.numel()}")
    starts = torch.randint(0, ids.numel() - seq_len, (batch_size,), generator=generator)
    return torch.stack([ids[s : s + seq_len] for s in starts.tolist()])


def eval_windows(ids: torch.Tensor, seq_len: int, max_tokens: int | None = None) -> torch.Tensor:
    """Non-overlapping windows covering ``ids`` (the tail shorter than a window is dropped).

    Args:
        ids: 1-D token ids.
        seq_len: Tokens per window.
        max_tokens: Use at most this many tokens from the start (None: all).

    Returns:
        Tensor of shape ``[n_windows, seq_len]``.
    """
    if max_tokens is not None:
        ids = ids[:max_tokens]
    n = ids.numel() // seq_len
    if n == 0:
        raise ValueError(f"need at least {seq_len} tokens, have {ids.numel()}")
    return ids[: n * seq_len].view(n, seq_len)
