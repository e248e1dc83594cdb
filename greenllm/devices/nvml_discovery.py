"""Open the NVIDIA GPUs of this machine; one that cannot be opened is skipped, not fatal.

A GPU the process may not open (a device node it lacks permission for, a GPU fallen off the
bus, one in a bad state) is listed in :attr:`NVMLDiscovery.unavailable` with the reason and
logged; the others are numbered densely (``index`` 0, 1, ... in NVML order), each keeping
NVML's own ``nvml_index`` and its UUID.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pynvml

from greenllm.devices.nvml import DEFAULT_POWER_POLL_INTERVAL_S, NVMLGPU
from greenllm.devices.nvml_errors import nvml_errors
from greenllm.devices.nvml_session import nvml_session
from greenllm.errors import DeviceError, DeviceNotFoundError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnavailableGPU:
    """A GPU NVML counts but this process could not open.

    Attributes:
        nvml_index: NVML's index of the GPU.
        reason: Why, as one line.
    """

    nvml_index: int
    reason: str


@dataclass
class NVMLDiscovery:
    """What discovery found.

    Attributes:
        gpus: The GPUs opened, ``index`` 0, 1, ... in NVML order.
        unavailable: The GPUs that could not be opened.
    """

    gpus: list[NVMLGPU] = field(default_factory=list)
    unavailable: list[UnavailableGPU] = field(default_factory=list)


def discover_nvml(
    power_poll_interval_s: float | None = DEFAULT_POWER_POLL_INTERVAL_S,
    restore_dir: Path | None = None,
) -> NVMLDiscovery:
    """Open every NVIDIA GPU of this machine that can be opened.

    Args:
        power_poll_interval_s: Passed to each :class:`NVMLGPU`.
        restore_dir: Passed to each :class:`NVMLGPU` (settings to restore, on disk).

    Returns:
        The GPUs opened and the ones skipped.

    Raises:
        DeviceNotFoundError: The NVML library or driver is missing, there is no GPU, or no
            GPU could be opened.
    """
    found = NVMLDiscovery()
    with nvml_session():
        with nvml_errors("count GPUs"):
            count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            raise DeviceNotFoundError("NVML found no NVIDIA GPU on this machine")
        try:
            for nvml_index in range(count):
                try:
                    gpu = NVMLGPU(
                        nvml_index,
                        power_poll_interval_s=power_poll_interval_s,
                        index=len(found.gpus),
                        restore_dir=restore_dir,
                    )
                except DeviceNotFoundError:
                    raise
                except DeviceError as err:
                    logger.warning("skipping NVML GPU %d: %s", nvml_index, err)
                    found.unavailable.append(UnavailableGPU(nvml_index, str(err)))
                    continue
                found.gpus.append(gpu)
        except BaseException:
            for gpu in found.gpus:
                gpu.close()
            raise
    if not found.gpus:
        reasons = "; ".join(f"GPU {u.nvml_index}: {u.reason}" for u in found.unavailable)
        raise DeviceNotFoundError(f"NVML found {count} GPU(s) but none could be opened ({reasons})")
    return found
