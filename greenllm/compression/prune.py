"""Magnitude pruning of the Linear layers inside the transformer blocks.

- unstructured: the smallest-magnitude weights are zeroed until a target sparsity is
  reached, ranked over all target layers at once (``scope="global"``) or layer by layer
  (``scope="layer"``);
- 2:4 semi-structured: in every group of 4 consecutive input weights of an output row,
  the 2 smallest are zeroed (50 % sparsity in the pattern sparse tensor cores accelerate).

Pruned weights are stored dense: zeros cost as many bytes as any weight, and the CPU matmul
does not skip them. An optional short fine-tune (:func:`finetune_pruned`) recovers quality
while the masks keep the pruned weights at zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from greenllm.compression.layers import target_linears
from greenllm.workloads.training import TrainConfig, TrainResult, train

Scope = Literal["global", "layer"]


@dataclass
class PruneResult:
    """What a pruning pass did.

    Attributes:
        method: ``prune`` (unstructured) or ``prune-2:4``.
        target_sparsity: Fraction of weights asked to be zero.
        scope: ``global``, ``layer`` or ``2:4``.
        masks: Per layer, True where a weight is kept.
        finetune: The recovery fine-tune run, if any.
    """

    method: str
    target_sparsity: float
    scope: str
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    finetune: TrainResult | None = None


def _threshold(magnitudes: torch.Tensor, sparsity: float) -> float:
    k = round(sparsity * magnitudes.numel())
    if k == 0:
        return float("-inf")
    return float(torch.kthvalue(magnitudes.flatten(), k).values)


def prune_magnitude(model: nn.Module, sparsity: float, scope: Scope = "global") -> PruneResult:
    """Zero the smallest-magnitude weights of the target layers, in place.

    Args:
        model: Model with nn.Linear layers (see ``conv1d_to_linear``).
        sparsity: Fraction of target weights to zero, in [0, 1).
        scope: Rank magnitudes over all target layers at once, or per layer.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    layers = target_linears(model)
    result = PruneResult(method="prune", target_sparsity=sparsity, scope=scope)
    global_cut = None
    if scope == "global":
        everything = torch.cat([m.weight.detach().abs().flatten() for m in layers.values()])
        global_cut = _threshold(everything, sparsity)
    for name, linear in layers.items():
        magnitudes = linear.weight.detach().abs()
        cut = global_cut if global_cut is not None else _threshold(magnitudes, sparsity)
        result.masks[name] = magnitudes > cut
    apply_masks(model, result.masks)
    return result


def prune_2_4(model: nn.Module) -> PruneResult:
    """Keep the 2 largest-magnitude weights of every 4 consecutive inputs, in place.

    Layers whose input size is not a multiple of 4 are left dense.
    """
    result = PruneResult(method="prune-2:4", target_sparsity=0.5, scope="2:4")
    for name, linear in target_linears(model).items():
        out_f, in_f = linear.weight.shape
        if in_f % 4:
            continue
        groups = linear.weight.detach().abs().reshape(out_f, in_f // 4, 4)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(-1, groups.topk(2, dim=-1).indices, True)
        result.masks[name] = keep.reshape(out_f, in_f)
    apply_masks(model, result.masks)
    return result


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the weights where the mask is False."""
    with torch.no_grad():
        for name, mask in masks.items():
            weight: torch.Tensor = model.get_submodule(name).weight  # type: ignore[assignment]
            weight.mul_(mask.to(weight.dtype))


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over the target layers."""
    layers = target_linears(model).values()
    zeros = sum(int((m.weight == 0).sum()) for m in layers)
    total = sum(m.weight.numel() for m in layers)
    return zeros / total if total else 0.0


def is_2_4_sparse(weight: torch.Tensor) -> bool:
    """Whether every group of 4 consecutive inputs of every row has at most 2 non-zeros."""
    out_f, in_f = weight.shape
    if in_f % 4:
        return False
    nonzero = (weight.reshape(out_f, in_f // 4, 4) != 0).sum(dim=-1)
    return bool((nonzero <= 2).all())


def finetune_pruned(
    model: nn.Module, result: PruneResult, train_ids: torch.Tensor, config: TrainConfig
) -> TrainResult:
    """Train the pruned model briefly, re-applying the masks after every step."""
    run = train(
        model,
        train_ids,
        config,
        after_step=lambda: apply_masks(model, result.masks),
        label=f"fine-tune {result.method}",
    )
    result.finetune = run
    return run
