"""Batched greedy decoding with a KV cache over left-padded prompts.

Prompts of different lengths are padded on the left so that every row's next token sits
in the last column; the attention mask hides the padding and position ids count only
real tokens, so each row decodes as it would alone.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import torch
from torch import nn


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, each ``[len(prompts), longest]``, padded on the left."""
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, longest - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
            mask[row, longest - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def decode_steps(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    steps: int,
    pad_id: int,
    device: torch.device,
) -> Generator[list[int], None, None]:
    """Greedy-decode ``steps`` tokens for every prompt; yields each step's tokens by row.

    The first yield comes after the prefill (one forward over the prompts), then one per
    decode forward. Stop iterating to abandon the batch.

    Args:
        model: A Hugging Face causal LM.
        prompts: Token ids per request (each at least one token).
        steps: Tokens to generate per row.
        pad_id: Id used for the padding (masked out).
        device: Where the model lives.
    """
    ids, mask = left_pad(prompts, pad_id, device)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    past = None
    for _ in range(steps):
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=past,
            use_cache=True,
        )
        past = out.past_key_values
        ids = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        yield ids.squeeze(1).tolist()
        mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
        positions = positions[:, -1:] + 1
