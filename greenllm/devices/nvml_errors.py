"""Turn NVML errors into greenllm's device errors, in one place.

No raw ``pynvml.NVMLError`` leaves the NVML backend: every NVML call runs inside
:func:`nvml_errors`, which re-raises

- ``NVML_ERROR_NO_PERMISSION`` as :class:`DevicePermissionError`, naming the privilege
  that is missing and how to grant it;
- ``NVML_ERROR_NOT_SUPPORTED`` as :class:`DeviceNotSupportedError`;
- a missing NVML library or driver as :class:`DeviceNotFoundError`;
- any other NVML error as :class:`DeviceError` with NVML's message and the operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pynvml

from greenllm.errors import (
    DeviceError,
    DeviceNotFoundError,
    DeviceNotSupportedError,
    DevicePermissionError,
)

#: What to do about each NVML error that means "there is no usable NVIDIA GPU here".
_NOT_FOUND_HINTS: dict[int, str] = {
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: (
        "the NVML library (libnvidia-ml.so.1) is not installed; install the NVIDIA driver"
    ),
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: (
        "the NVIDIA kernel driver is not loaded; load it (modprobe nvidia) or reboot"
    ),
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH: (
        "the NVML library and the loaded NVIDIA driver differ in version; reboot or reload "
        "the driver"
    ),
}


#: The systemd unit that grants CAP_SYS_ADMIN to the agent service alone.
SYSTEMD_UNIT = "examples/systemd/greenllm-agent.service"


def permission_hint() -> str:
    """How to grant the privilege NVML's setters need, as one sentence.

    It never suggests file capabilities on the Python interpreter: those would hand
    CAP_SYS_ADMIN to every Python program on the machine.
    """
    return (
        "changing power limits or locking clocks needs CAP_SYS_ADMIN: run the agent as the "
        f"systemd service {SYSTEMD_UNIT} (it grants CAP_SYS_ADMIN to that service alone), "
        "run the command as root, or start its container with `--cap-add SYS_ADMIN`"
    )


def translate(err: pynvml.NVMLError, operation: str, device: str) -> DeviceError:
    """The greenllm error for an NVML error.

    Args:
        err: The error NVML raised.
        operation: What was being done, e.g. ``"set power limit to 300 W"``.
        device: Which device, e.g. ``"GPU 0 (H100-SXM)"``; empty for library-wide calls.

    Returns:
        A :class:`DeviceError` subclass whose message names the device, the operation and
        NVML's reason (and, for missing privilege, how to grant it).
    """
    where = f"{device}: " if device else ""
    what = f"{where}cannot {operation} (NVML error {err.value}: {err})"
    if isinstance(err, pynvml.NVMLError_NoPermission):
        return DevicePermissionError(f"{what}: {permission_hint()}")
    if isinstance(err, pynvml.NVMLError_NotSupported):
        return DeviceNotSupportedError(f"{what}: not supported by this GPU or driver")
    hint = _NOT_FOUND_HINTS.get(err.value)
    if hint is not None:
        return DeviceNotFoundError(f"{what}: {hint}")
    return DeviceError(what)


@contextmanager
def nvml_errors(operation: str, device: str = "") -> Iterator[None]:
    """Run the body, re-raising any ``pynvml.NVMLError`` as a greenllm device error.

    Args:
        operation: What the body does, for the message (see :func:`translate`).
        device: Which device the body talks to, for the message.

    Raises:
        DeviceError: The body raised an NVML error (see :func:`translate` for subclasses).
    """
    try:
        yield
    except pynvml.NVMLError as err:
        raise translate(err, operation, device) from err
