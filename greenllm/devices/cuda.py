"""Point CUDA at the same physical GPU NVML measures and caps: by UUID, never by number.

NVML numbers GPUs in PCI order and ignores ``CUDA_VISIBLE_DEVICES``; CUDA numbers them
fastest-first (unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``) among the visible ones only. So
``cuda:N`` and NVML GPU ``N`` may be different boards. Two ways to stay on the right one:

- start the process that runs the load with :func:`cuda_env` (``CUDA_VISIBLE_DEVICES`` set to
  the GPUs' UUIDs, which CUDA accepts since 11.0): the GPU is then ``cuda:0`` in there;
- in a process that already runs, find the CUDA index whose UUID matches
  (:func:`torch_device_index`, from ``torch.cuda.get_device_properties(i).uuid``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from greenllm.devices.base import GPU
from greenllm.errors import DeviceNotFoundError

#: UUID prefix of simulated GPUs (``sim-<node>-<index>``): they have no CUDA device.
SIMULATED_UUID_PREFIX = "sim-"


def normalise_uuid(uuid: str) -> str:
    """``uuid`` lower-cased without its ``GPU-`` prefix (torch prints it without one)."""
    text = uuid.strip().lower()
    return text[4:] if text.startswith("gpu-") else text


def is_real(gpu: GPU) -> bool:
    """True for a GPU CUDA can see (not simulated)."""
    return not gpu.uuid.startswith(SIMULATED_UUID_PREFIX)


def cuda_env(gpus: Sequence[GPU]) -> dict[str, str]:
    """Environment for a process that must run on exactly ``gpus`` (in that order).

    Returns:
        ``{"CUDA_VISIBLE_DEVICES": "GPU-<uuid>[,...]", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}``
        for real GPUs; ``{}`` when any of them is simulated (nothing to pin).
    """
    if not gpus or not all(is_real(g) for g in gpus):
        return {}
    return {
        "CUDA_VISIBLE_DEVICES": ",".join(g.uuid for g in gpus),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }


def torch_device_index(uuid: str, torch_module: Any = None) -> int:
    """The CUDA device index, in this process, of the GPU with NVML UUID ``uuid``.

    Args:
        uuid: The NVML UUID (``GPU-...``).
        torch_module: The ``torch`` module (imported when None; a stand-in in tests).

    Raises:
        DeviceNotFoundError: torch sees no CUDA device, or none with that UUID (e.g.
            ``CUDA_VISIBLE_DEVICES`` hides it).
    """
    torch = torch_module
    if torch is None:
        import torch
    if not torch.cuda.is_available():
        raise DeviceNotFoundError("torch sees no CUDA device to run the load on")
    wanted = normalise_uuid(uuid)
    seen = []
    for i in range(torch.cuda.device_count()):
        found = normalise_uuid(str(torch.cuda.get_device_properties(i).uuid))
        if found == wanted:
            return i
        seen.append(found)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    raise DeviceNotFoundError(
        f"GPU {uuid} is not among the {len(seen)} CUDA device(s) this process sees "
        f"(CUDA_VISIBLE_DEVICES={visible!r})"
    )


def cuda_device_uuid(cuda_index: int, torch_module: Any = None) -> str:
    """The UUID torch reports for ``cuda:<cuda_index>`` in this process, ``GPU-`` prefixed.

    Raises:
        DeviceNotFoundError: torch sees no such CUDA device.
    """
    torch = torch_module
    if torch is None:
        import torch
    if not torch.cuda.is_available() or not 0 <= cuda_index < torch.cuda.device_count():
        raise DeviceNotFoundError(f"no CUDA device cuda:{cuda_index} in this process")
    return "GPU-" + normalise_uuid(str(torch.cuda.get_device_properties(cuda_index).uuid))


def gpu_with_uuid(gpus: Sequence[GPU], uuid: str) -> GPU | None:
    """The GPU of ``gpus`` whose UUID is ``uuid`` (either spelling), or None.

    E.g. the NVML GPU a process's ``cuda:N`` runs on:
    ``gpu_with_uuid(discover_nvml_gpus(), cuda_device_uuid(N))``.
    """
    wanted = normalise_uuid(uuid)
    return next((g for g in gpus if normalise_uuid(g.uuid) == wanted), None)
