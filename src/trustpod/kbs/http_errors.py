"""KBS error replies: statuses from the shared table (``trustpod.error_table``, also used by the
guest API and the CLI) plus the KBS transport's 408/413, and upstream's error bodies.

Body: kbs-types ``ErrorInformation`` ``{"type": ".../kbs/errors/<Variant>", "detail": ...}``
(reference §1.8). Default statuses follow the protocol document (401 authentication, 403 policy
denial, 404 unknown resource/plugin/path, 400 malformed input, 408 stalled body, 413 body too
large, 503 dependency).
With ``[trustpod] upstream_status_codes = true`` every error is 401 except 404 for an invalid path
or unknown plugin (and 413 for an oversized body), as upstream's ``kbs/src/error.rs`` does.
Every error response carries a request id (header ``x-request-id`` and in the detail text).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from trustpod.error_table import Outcome, http_status
from trustpod.errors import EvidenceError, PolicyDenied, TrustpodError

__all__ = [
    "ERROR_TYPE_PREFIX",
    "BodyTimeout",
    "BodyTooLarge",
    "Denial",
    "ErrorReply",
    "MalformedBody",
    "error_reply",
    "new_request_id",
]

ERROR_TYPE_PREFIX = "https://github.com/confidential-containers/kbs/errors/"

# reason prefix -> upstream variant name (first match wins).
_VARIANTS: tuple[tuple[str, str], ...] = (
    ("kbs.admin", "AdminAuthAccess"),
    ("kbs.token_missing", "TokenNotFound"),
    ("kbs.token", "TokenVerifierError"),
    ("token.", "TokenVerifierError"),
    ("kbs.path", "InvalidRequestPath"),
    ("kbs.plugin", "PluginNotFound"),
    ("kbs.resource", "PluginInternalError"),
    ("kbs.jwe", "JweError"),
    ("jwe", "JweError"),
    ("kbs.policy_parse", "ParsePolicyError"),
    ("rego", "ParsePolicyError"),
    ("kbs.policy", "PolicyEngineError"),
    ("rvps", "RvpsError"),
    ("kbs.body", "HTTPFailed"),
    ("kbs.json", "SerdeError"),
)


class BodyTooLarge(EvidenceError):
    """The request body exceeded ``http_server.payload_request_size``."""

    default_reason = "kbs.body_too_large"


class BodyTimeout(EvidenceError):
    """The request body did not arrive within ``[trustpod] request_body_timeout_s`` (408)."""

    default_reason = "kbs.body_timeout"


class MalformedBody(EvidenceError):
    """The request body is not valid JSON (400 SerdeError)."""

    default_reason = "kbs.json"


class Denial(PolicyDenied):
    """A denial whose internal explanation (rule, claim, check) goes to the audit log only."""

    def __init__(self, message: str, *, explain: dict[str, Any], reason: str | None = None):
        super().__init__(message, reason=reason or "policy.denied.resource")
        self.explain = explain


@dataclass(frozen=True, slots=True)
class ErrorReply:
    status: int
    variant: str
    detail: str
    request_id: str

    def body(self) -> bytes:
        return json.dumps(
            {"type": ERROR_TYPE_PREFIX + self.variant, "detail": self.detail}
        ).encode()

    def headers(self) -> dict[str, str]:
        return {"x-request-id": self.request_id, "content-type": "application/json"}


def new_request_id() -> str:
    return uuid.uuid4().hex


def _variant(exc: TrustpodError, default: str) -> str:
    for prefix, variant in _VARIANTS:
        if exc.reason.startswith(prefix):
            return variant
    if isinstance(exc, PolicyDenied):
        return "PolicyDeny"
    return default


#: The KBS transport's own rows on top of the shared table (``trustpod.error_table``).
_TRANSPORT: dict[type[TrustpodError], Outcome] = {
    BodyTooLarge: Outcome(413, 4),
    BodyTimeout: Outcome(408, 4),
}


def _status(exc: TrustpodError) -> int:
    # (1) Protocol-document statuses (our default): the shared error table.
    return http_status(exc, _TRANSPORT)


def error_reply(
    exc: TrustpodError,
    *,
    default_variant: str = "AttestationError",
    upstream_status_codes: bool = False,
    request_id: str | None = None,
) -> ErrorReply:
    """Status, variant and client-facing detail for ``exc`` (no policy internals, no secrets)."""
    rid = request_id or new_request_id()
    variant = _variant(exc, default_variant)
    status = _status(exc)
    # (2) Upstream compatibility: all 401, except 404 for path/plugin and 413 for size.
    if upstream_status_codes and status not in (408, 413):
        status = 404 if variant in ("InvalidRequestPath", "PluginNotFound") else 401
    detail = f"{exc.message} (request id {rid})"
    return ErrorReply(status, variant, detail, rid)
