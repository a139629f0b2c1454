"""gRPC status codes as ttRPC carries them in ``Response.status``, and the one error table.

ttRPC reuses gRPC's ``google.rpc.Status`` and code numbers. ``status_for`` is the single place
a trustpod error becomes a status: kata answers PERMISSION_DENIED for a policy refusal,
INVALID_ARGUMENT for a bad request, NOT_FOUND for an unknown container/process, INTERNAL for
the rest; ttRPC itself answers UNIMPLEMENTED for an unknown service or method.
"""

from __future__ import annotations

import enum

from trustpod.errors import (
    AuthenticationError,
    ConfigError,
    EvidenceError,
    NotFoundError,
    PolicyDenied,
    TrustpodError,
)

__all__ = ["Code", "RpcError", "status_for"]


class Code(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class RpcError(TrustpodError):
    """A call answered with a non-OK status (raised by the client; handlers may raise it to
    choose the status themselves)."""

    default_reason = "ttrpc.status"

    def __init__(self, code: int, message: str, *, reason: str | None = None) -> None:
        try:
            name = Code(code).name
        except ValueError:
            name = str(code)
        super().__init__(f"{name}: {message}", reason=reason)
        self.code = code
        self.status_message = message


def status_for(exc: TrustpodError) -> tuple[int, str]:
    """(code, message) for an error raised by a handler."""
    if isinstance(exc, RpcError):
        return exc.code, exc.status_message
    if isinstance(exc, PolicyDenied):
        code = Code.PERMISSION_DENIED
    elif isinstance(exc, NotFoundError):
        code = Code.NOT_FOUND
    elif isinstance(exc, EvidenceError | ConfigError):
        code = Code.INVALID_ARGUMENT
    elif isinstance(exc, AuthenticationError):
        code = Code.UNAUTHENTICATED
    else:
        code = Code.INTERNAL
    return int(code), exc.message
