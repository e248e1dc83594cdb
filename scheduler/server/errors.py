"""Turning the shell's :class:`~scheduler.shell.errors.BadInput` into a gRPC status."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import grpc

from scheduler.shell.errors import BadInput

__all__ = ["BadInput", "abort_with"]

log = logging.getLogger(__name__)


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], exc: BadInput) -> NoReturn:
    """Log a rejected request and end the RPC with its status."""
    log.warning("rejected: %s: %s", exc.code.name, exc.message)
    await context.abort(exc.code, exc.message)
    raise AssertionError("unreachable: abort raises")
