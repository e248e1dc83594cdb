"""The error servicers turn into a gRPC status."""

from __future__ import annotations

import grpc


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
