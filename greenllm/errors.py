"""Exceptions raised by the greenllm library.

Every error a user can cause derives from :class:`GreenllmError`; the CLI prints
its message as one line on stderr and exits non-zero, never a traceback.
"""

from __future__ import annotations


class GreenllmError(Exception):
    """Base class for errors whose message is meant for the user."""


class ConfigError(GreenllmError):
    """A configuration or job-spec file is invalid.

    The message names the file, the field path and what is wrong.
    """


class DeviceError(GreenllmError):
    """A GPU operation failed."""


class DeviceNotFoundError(DeviceError):
    """No GPU of the requested kind is present (e.g. NVML library missing)."""


class DevicePermissionError(DeviceError):
    """The process lacks the privilege an operation needs (NVML_ERROR_NO_PERMISSION)."""


class DeviceNotSupportedError(DeviceError):
    """The GPU or driver does not support an operation (NVML_ERROR_NOT_SUPPORTED)."""


class OutOfRangeError(DeviceError):
    """A requested setting lies outside the device's constraints."""
