"""Which layers compression touches, and GPT-2's Conv1D turned into nn.Linear.

Compression works on the ``nn.Linear`` layers inside the transformer blocks. Embeddings
and the LM head (tied to the token embedding in GPT-2 and SmolLM2) are left alone. GPT-2
stores its projections as ``transformers.pytorch_utils.Conv1D`` (weight ``[in, out]``);
:func:`conv1d_to_linear` swaps each for an equivalent ``nn.Linear`` (weight ``[out, in]``)
first, so every method sees one layer type.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantLinear
from transformers.pytorch_utils import Conv1D

#: Modules whose names end like this are never compressed.
EXCLUDED_SUFFIXES = ("lm_head",)


def conv1d_to_linear(model: nn.Module) -> int:
    """Replace every Conv1D in ``model`` by an nn.Linear computing the same function.

    Returns:
        How many layers were replaced.
    """
    count = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, Conv1D):
            in_features, out_features = module.weight.shape
            linear = nn.Linear(in_features, out_features, bias=module.bias is not None)
            with torch.no_grad():
                linear.weight.copy_(module.weight.t())
                if module.bias is not None:
                    linear.bias.copy_(module.bias)
            set_module(model, name, linear)
            count += 1
    return count


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted path ``name`` inside ``model``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def target_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The nn.Linear layers compression applies to, by dotted name (LM head excluded)."""
    return {
        name: module
        for name, module in model.named_modules()
        if type(module) is nn.Linear and not name.endswith(EXCLUDED_SUFFIXES)
    }


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (tied weights counted once) plus quantized weight elements."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    for module in model.modules():
        if isinstance(module, DynamicQuantLinear):
            bias = module.bias()
            total += module.weight().numel() + (bias.numel() if bias is not None else 0)
        counted = getattr(module, "quantized_weight_numel", None)
        if callable(counted):
            total += int(counted())
    return total
