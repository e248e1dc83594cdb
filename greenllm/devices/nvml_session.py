"""One reference-counted NVML session per process.

``nvmlInit`` runs when the first user (discovery or a GPU object) needs NVML and
``nvmlShutdown`` when the last one lets go.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pynvml

from greenllm.devices.nvml_errors import nvml_errors
from greenllm.errors import DeviceError, DeviceNotFoundError

logger = logging.getLogger(__name__)

_session_lock = threading.Lock()
_session_users = 0


def acquire_nvml() -> None:
    """Take one reference on the NVML session, initialising NVML for the first.

    Raises:
        DeviceNotFoundError: NVML cannot start (library or driver missing, or broken).
    """
    global _session_users
    with _session_lock:
        if _session_users == 0:
            try:
                with nvml_errors("initialise NVML"):
                    pynvml.nvmlInit()
            except DeviceError as err:
                raise DeviceNotFoundError(f"no usable NVIDIA GPU: {err}") from err.__cause__
        _session_users += 1


def release_nvml() -> None:
    """Drop one reference on the NVML session, shutting NVML down after the last."""
    global _session_users
    with _session_lock:
        _session_users -= 1
        if _session_users == 0:
            try:
                with nvml_errors("shut down NVML"):
                    pynvml.nvmlShutdown()
            except DeviceError as err:
                logger.warning("%s", err)


@contextmanager
def nvml_session() -> Iterator[None]:
    """Hold one reference on the NVML session for the ``with`` block."""
    acquire_nvml()
    try:
        yield
    finally:
        release_nvml()
