"""Low-rank factorisation of the Linear layers inside the transformer blocks.

Each weight ``W`` (``[out, in]``) is replaced by ``U_r S_r V_r^T`` from its SVD, stored as
two Linear layers: ``down`` (``in -> r``, weight ``S_r^{1/2} V_r^T``) then ``up``
(``r -> out``, weight ``U_r S_r^{1/2}``, with the original bias). The rank is either fixed
or the smallest that keeps a fraction of the squared singular values ("energy"). A layer is
factorised only where that saves parameters (``r * (in + out) < in * out``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from greenllm.compression.layers import set_module, target_linears


class LowRankLinear(nn.Module):
    """``up(down(x))``: a rank-``r`` Linear layer."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The factorised product."""
        out: torch.Tensor = self.up(self.down(x))
        return out

    def weight_product(self) -> torch.Tensor:
        """The dense ``[out, in]`` weight this layer stands for."""
        return self.up.weight @ self.down.weight


@dataclass
class LowRankResult:
    """What a factorisation pass did.

    Attributes:
        ranks: Rank chosen per factorised layer.
        kept_energy: Fraction of squared singular values kept, per factorised layer.
        skipped: Layers left dense, with the reason.
    """

    ranks: dict[str, int] = field(default_factory=dict)
    kept_energy: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def choose_rank(singular_values: torch.Tensor, rank: int | None, energy: float | None) -> int:
    """The rank to keep: ``rank`` itself (capped at full rank), or the smallest rank whose
    squared singular values sum to at least ``energy`` of the total."""
    full = singular_values.numel()
    if rank is not None:
        return max(1, min(rank, full))
    if energy is None:
        raise ValueError("give a rank or an energy fraction")
    squares = singular_values.double() ** 2
    cumulative = torch.cumsum(squares, 0) / squares.sum()
    return min(full, int(torch.searchsorted(cumulative, energy).item()) + 1)


def factorize(
    model: nn.Module, rank: int | None = None, energy: float | None = None
) -> LowRankResult:
    """Replace the target Linear layers by rank-reduced ones, in place.

    Args:
        model: Model with nn.Linear layers (see ``conv1d_to_linear``).
        rank: Fixed rank per layer; or
        energy: Fraction of squared singular values to keep, in (0, 1].
    """
    if (rank is None) == (energy is None):
        raise ValueError("give exactly one of rank and energy")
    if energy is not None and not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    if rank is not None and rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    result = LowRankResult()
    for name, linear in target_linears(model).items():
        weight = linear.weight.detach().double()
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)
        r = choose_rank(s, rank, energy)
        out_f, in_f = weight.shape
        if r * (in_f + out_f) >= in_f * out_f:
            result.skipped[name] = f"rank {r} saves no parameters for {out_f}x{in_f}"
            continue
        root = torch.sqrt(s[:r])
        module = LowRankLinear(in_f, out_f, r, linear.bias is not None)
        with torch.no_grad():
            module.down.weight.copy_((root[:, None] * vh[:r]).float())
            module.up.weight.copy_((u[:, :r] * root[None, :]).float())
            if linear.bias is not None:
                module.up.bias.copy_(linear.bias.detach())
        set_module(model, name, module)
        result.ranks[name] = r
        result.kept_energy[name] = float((s[:r] ** 2).sum() / (s**2).sum())
    return result
