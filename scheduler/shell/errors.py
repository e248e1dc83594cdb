"""The error the shell raises for input it rejects; servers turn it into an RPC status."""

from __future__ import annotations

import grpc


class BadInput(Exception):
    """A request or agent message the controller rejects.

    Attributes:
        code: The gRPC status code to answer with.
        message: One line saying what was wrong.
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
