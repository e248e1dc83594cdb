"""Quantization of the Linear layers inside the transformer blocks.

- ``int8-dynamic``: ``torch.ao.quantization.quantize_dynamic`` with per-channel int8
  weights; activations are quantized on the fly and the matmul runs in int8 (fbgemm/onednn
  on x86). CPU only.
- ``int8`` (weight-only): int8 weights with one fp32 scale per output channel, multiplied
  by ``aten._weight_int8pack_mm`` on the CPU (int8 weights, float activations); elsewhere
  the weights are dequantized before the matmul, and :attr:`kernel` says so.
- ``int4`` (weight-only): asymmetric 4-bit weights in groups along the input dimension,
  two per byte, multiplied by ``aten._weight_int4pack_mm_for_cpu`` on the CPU; elsewhere
  dequantized. Layers whose shapes the kernel cannot take (output features not a multiple
  of 16, input features not a multiple of the group size) stay in float and are listed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantLinear
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

from greenllm.compression.layers import set_module, target_linears

KERNEL_DYNAMIC_INT8 = "torch.ao dynamic int8 (int8 x int8 matmul)"
KERNEL_INT8_PACK = "aten._weight_int8pack_mm (int8 weights, float activations)"
KERNEL_INT4_PACK = "aten._weight_int4pack_mm_for_cpu (int4 weights, float activations)"
KERNEL_DEQUANTIZED = "fake/dequantized (weights dequantized to float before the matmul)"
INT4_N_MULTIPLE = 16


@dataclass
class QuantizeResult:
    """What a quantization pass did.

    Attributes:
        method: ``int8-dynamic``, ``int8`` or ``int4``.
        layers: Names of the quantized layers.
        skipped: Layers left in float, with the reason.
        group_size: Input elements per int4 scale/zero group (int4 only).
    """

    method: str
    layers: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    group_size: int | None = None


class Int8WeightOnlyLinear(nn.Module):
    """A Linear layer with int8 weights and one fp32 scale per output feature.

    Buffers: ``weight_int8`` (int8, ``[out, in]``), ``weight_scales`` (fp32, ``[out]``);
    the bias stays a float parameter.
    """

    weight_int8: torch.Tensor
    weight_scales: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8)
        )
        self.register_buffer("weight_scales", torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8WeightOnlyLinear:
        """Quantize ``linear``'s weights symmetrically per output channel."""
        module = cls(linear.in_features, linear.out_features, linear.bias is not None)
        w = linear.weight.detach().float()
        scales = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        module.weight_int8.copy_(torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8))
        module.weight_scales.copy_(scales)
        if linear.bias is not None and module.bias is not None:
            module.bias.data.copy_(linear.bias.detach())
        return module

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight the int8 values stand for, ``[out, in]``."""
        return self.weight_int8.float() * self.weight_scales[:, None]

    def kernel(self, device: torch.device) -> str:
        """The matmul path used on ``device``."""
        return KERNEL_INT8_PACK if device.type == "cpu" else KERNEL_DEQUANTIZED

    def quantized_weight_numel(self) -> int:
        """Weight elements held in int8."""
        return self.weight_int8.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + b`` with the int8 weights."""
        flat = x.reshape(-1, self.in_features)
        if x.device.type == "cpu":
            y = torch._weight_int8pack_mm(flat, self.weight_int8, self.weight_scales.to(x.dtype))
        else:
            y = flat @ self.dequantized_weight().to(x.dtype).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


class Int4WeightOnlyLinear(nn.Module):
    """A Linear layer with asymmetric 4-bit weights, two per byte.

    Buffers: ``weight_uint4`` (uint8 ``[out, in/2]``: element ``2j`` in the low nibble,
    ``2j+1`` in the high one), ``scales_and_zeros`` (fp32 ``[in/group, out, 2]``); a weight
    is ``(q - 8) * scale + zero``. The CPU kernel's own packing is derived on first use and
    not saved.
    """

    weight_uint4: torch.Tensor
    scales_and_zeros: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool, group_size: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.group_size = group_size
        self.register_buffer(
            "weight_uint4", torch.zeros(out_features, in_features // 2, dtype=torch.uint8)
        )
        self.register_buffer(
            "scales_and_zeros", torch.zeros(in_features // group_size, out_features, 2)
        )
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._cpu_packed: torch.Tensor | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int) -> Int4WeightOnlyLinear:
        """Quantize ``linear``'s weights per group of ``group_size`` input elements."""
        out_f, in_f = linear.weight.shape
        module = cls(in_f, out_f, linear.bias is not None, group_size)
        w = linear.weight.detach().float().reshape(out_f, in_f // group_size, group_size)
        low = w.amin(dim=-1, keepdim=True)
        high = w.amax(dim=-1, keepdim=True)
        scale = ((high - low) / 15.0).clamp(min=1e-12)
        q = torch.round((w - low) / scale).clamp(0, 15).to(torch.uint8).reshape(out_f, in_f)
        module.weight_uint4.copy_(q[:, 0::2] | (q[:, 1::2] << 4))
        zero = low + 8.0 * scale
        module.scales_and_zeros.copy_(
            torch.stack([scale.squeeze(-1), zero.squeeze(-1)], dim=-1).transpose(0, 1)
        )
        if linear.bias is not None and module.bias is not None:
            module.bias.data.copy_(linear.bias.detach())
        return module

    def unpacked(self) -> torch.Tensor:
        """The 4-bit values 0-15 as int32, ``[out, in]``."""
        low = self.weight_uint4 & 0x0F
        high = self.weight_uint4 >> 4
        return torch.stack([low, high], dim=-1).reshape(self.out_features, -1).to(torch.int32)

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight the 4-bit values stand for, ``[out, in]``."""
        groups = self.in_features // self.group_size
        q = self.unpacked().float().reshape(self.out_features, groups, self.group_size)
        scale = self.scales_and_zeros[..., 0].t().unsqueeze(-1)
        zero = self.scales_and_zeros[..., 1].t().unsqueeze(-1)
        return ((q - 8.0) * scale + zero).reshape(self.out_features, self.in_features)

    def kernel(self, device: torch.device) -> str:
        """The matmul path used on ``device``."""
        return KERNEL_INT4_PACK if device.type == "cpu" else KERNEL_DEQUANTIZED

    def quantized_weight_numel(self) -> int:
        """Weight elements held in 4 bits."""
        return self.in_features * self.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + b`` with the 4-bit weights."""
        flat = x.reshape(-1, self.in_features)
        if x.device.type == "cpu":
            if self._cpu_packed is None:
                self._cpu_packed = torch._convert_weight_to_int4pack_for_cpu(self.unpacked(), 1)
            y = torch._weight_int4pack_mm_for_cpu(
                flat, self._cpu_packed, self.group_size, self.scales_and_zeros.to(x.dtype)
            )
        else:
            y = flat @ self.dequantized_weight().to(x.dtype).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


def quantize_dynamic_int8(model: nn.Module) -> QuantizeResult:
    """Replace the target Linear layers by torch.ao dynamic int8 ones (per-channel), in place."""
    names = list(target_linears(model))
    with warnings.catch_warnings():
        # torch 2.13 announces the quantized dtypes' future removal; they work today.
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        quantize_dynamic(
            model, qconfig_spec=dict.fromkeys(names, per_channel_dynamic_qconfig), inplace=True
        )
    return QuantizeResult(method="int8-dynamic", layers=names)


def quantize_weight_only(model: nn.Module, bits: int, group_size: int = 32) -> QuantizeResult:
    """Replace the target Linear layers by int8 or int4 weight-only ones, in place.

    Args:
        model: Model whose block Linears are quantized.
        bits: 8 or 4.
        group_size: Input elements per int4 scale/zero (32, 64, 128 or 256).
    """
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    result = QuantizeResult(method=f"int{bits}", group_size=group_size if bits == 4 else None)
    for name, linear in target_linears(model).items():
        if bits == 8:
            set_module(model, name, Int8WeightOnlyLinear.from_linear(linear))
        elif linear.out_features % INT4_N_MULTIPLE or linear.in_features % group_size:
            result.skipped[name] = (
                f"shape {linear.out_features}x{linear.in_features} not supported by the int4 "
                f"kernel (out % {INT4_N_MULTIPLE}, in % {group_size})"
            )
            continue
        else:
            set_module(model, name, Int4WeightOnlyLinear.from_linear(linear, group_size))
        result.layers.append(name)
    return result


def kernels_used(model: nn.Module, device: torch.device) -> list[str]:
    """The distinct matmul paths of the quantized layers of ``model`` on ``device``."""
    found: list[str] = []
    for module in model.modules():
        if isinstance(module, DynamicQuantLinear):
            kernel = KERNEL_DYNAMIC_INT8
        elif isinstance(module, Int8WeightOnlyLinear | Int4WeightOnlyLinear):
            kernel = module.kernel(device)
        else:
            continue
        if kernel not in found:
            found.append(kernel)
    return found
