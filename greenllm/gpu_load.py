"""Synthetic GPU loads for profiling a real GPU with torch.

``train``/``prefill`` run a bf16 GEMM loop (compute-bound); ``decode`` runs a batched
matrix-vector loop over a weight matrix much larger than the L2 cache (memory-bound),
the shape of LLM decode. Units: one per GEMM for train/prefill ("steps"), ``batch``
per GEMV for decode ("tokens").
"""

from __future__ import annotations

import time
from collections.abc import Callable

from greenllm.devices.physics import WorkloadKind
from greenllm.errors import DeviceNotFoundError

GEMM_SIZE = 8192
DECODE_WEIGHT_ROWS = 16384


def torch_runner(kind: WorkloadKind, batch: int, device_index: int = 0) -> Callable[[float], float]:
    """A runner for :func:`greenllm.profiling.profile_device` on CUDA device ``device_index``.

    Raises:
        DeviceNotFoundError: torch sees no CUDA device.
    """
    import torch

    if not torch.cuda.is_available():
        raise DeviceNotFoundError("torch sees no CUDA device to run the profiling load on")
    device = torch.device("cuda", device_index)
    if kind == "decode":
        weight = torch.randn(DECODE_WEIGHT_ROWS, DECODE_WEIGHT_ROWS, device=device).bfloat16()
        x = torch.randn(DECODE_WEIGHT_ROWS, batch, device=device).bfloat16()
        units_per_op = float(batch)

        def op() -> None:
            torch.matmul(weight, x)

    else:
        a = torch.randn(GEMM_SIZE, GEMM_SIZE, device=device).bfloat16()
        b = torch.randn(GEMM_SIZE, GEMM_SIZE, device=device).bfloat16()
        units_per_op = 1.0

        def op() -> None:
            torch.matmul(a, b)

    def run(duration_s: float) -> float:
        ops = 0
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            for _ in range(10):
                op()
            torch.cuda.synchronize(device)
            ops += 10
        return ops * units_per_op

    return run
