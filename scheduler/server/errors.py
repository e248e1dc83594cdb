"""The error servicers turn into a gRPC status."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import grpc

log = logging.getLogger(__name__)


class BadInput(Exception):
    """A request the controller rejects; ``code`` and ``message`` become the RPC status.

    Attributes:
        code: The gRPC status code to answer with.
        message: One line saying what was wrong.
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], exc: BadInput) -> NoReturn:
    """Log a rejected request and end the RPC with its status."""
    log.warning("rejected: %s: %s", exc.code.name, exc.message)
    await context.abort(exc.code, exc.message)
    raise AssertionError("unreachable: abort raises")
