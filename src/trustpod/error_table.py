"""The ONE table from the error tree (``trustpod.errors``) to HTTP status and CLI exit code.

Used by the KBS (``trustpod.kbs.http_errors``), the guest API (``trustpod.guest.api``) and the
CLI (``trustpod.cli.main``), so an error means the same thing wherever it surfaces:

=====================  ====  ====  =========================================================
class                  HTTP  exit  why
=====================  ====  ====  =========================================================
EvidenceError          400   4     the caller sent something malformed
VerificationError      401   1     a presented thing (evidence, signature, binding) did not
                                   verify: not authenticated (upstream KBS: 401)
AuthenticationError    401   1     missing or invalid session, token or credential
PolicyDenied           403   1     valid and authenticated, but a policy said no
NotFoundError          404   1     the named thing does not exist
DependencyError        503   3     storage, a vendor service, the KBS, a TPM failed; retry
ConfigError            503   2     this server is misconfigured; an operator must act
TrustpodError (other)  500   1     a failure no narrower class describes
=====================  ====  ====  =========================================================

The most specific class of an error's MRO present in the table wins. A transport can add its
own subclasses (the KBS: 413 body too large, 408 body too slow) through ``extra``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from trustpod.errors import (
    AuthenticationError,
    ConfigError,
    DependencyError,
    EvidenceError,
    NotFoundError,
    PolicyDenied,
    TrustpodError,
    VerificationError,
)

__all__ = ["ERROR_TABLE", "Outcome", "exit_code", "http_status", "outcome"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one error class surfaces: HTTP status and CLI exit code."""

    http_status: int
    exit_code: int


ERROR_TABLE: Mapping[type[TrustpodError], Outcome] = {
    EvidenceError: Outcome(400, 4),
    VerificationError: Outcome(401, 1),
    AuthenticationError: Outcome(401, 1),
    PolicyDenied: Outcome(403, 1),
    NotFoundError: Outcome(404, 1),
    DependencyError: Outcome(503, 3),
    ConfigError: Outcome(503, 2),
    TrustpodError: Outcome(500, 1),
}


def outcome(
    exc: TrustpodError, extra: Mapping[type[TrustpodError], Outcome] | None = None
) -> Outcome:
    """The row of the most specific class of ``exc`` (``extra`` rows first)."""
    for cls in type(exc).__mro__:
        if extra and cls in extra:
            return extra[cls]
        row = ERROR_TABLE.get(cls)
        if row is not None:
            return row
    return ERROR_TABLE[TrustpodError]


def http_status(
    exc: TrustpodError, extra: Mapping[type[TrustpodError], Outcome] | None = None
) -> int:
    return outcome(exc, extra).http_status


def exit_code(exc: TrustpodError) -> int:
    return outcome(exc).exit_code
