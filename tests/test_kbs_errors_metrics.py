"""The single error map (statuses, variants, upstream mode) and metric label bounds."""

from __future__ import annotations

import json

import pytest

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
from trustpod.kbs.http_errors import BodyTooLarge, Denial, MalformedBody, error_reply
from trustpod.kbs.metrics import OVERFLOW_LABEL, KbsMetrics

PREFIX = "https://github.com/confidential-containers/kbs/errors/"


@pytest.mark.parametrize(
    ("exc", "status", "upstream", "variant"),
    [
        (AuthenticationError("x", reason="kbs.session_missing"), 401, 401, "AttestationError"),
        (AuthenticationError("x", reason="kbs.token_missing"), 401, 401, "TokenNotFound"),
        (AuthenticationError("x", reason="token.expired"), 401, 401, "TokenVerifierError"),
        (AuthenticationError("x", reason="kbs.admin_no_token"), 401, 401, "AdminAuthAccess"),
        (PolicyDenied("x", reason="kbs.admin_forbidden"), 403, 401, "AdminAuthAccess"),
        (Denial("x", explain={}), 403, 401, "PolicyDeny"),
        (NotFoundError("x", reason="kbs.path_invalid"), 404, 404, "InvalidRequestPath"),
        (NotFoundError("x", reason="kbs.plugin_not_found"), 404, 404, "PluginNotFound"),
        (NotFoundError("x", reason="kbs.resource_not_found"), 404, 401, "PluginInternalError"),
        (MalformedBody("x"), 400, 401, "SerdeError"),
        (EvidenceError("x", reason="kbs.version_mismatch"), 400, 401, "AttestationError"),
        (EvidenceError("x", reason="kbs.policy_parse"), 400, 401, "ParsePolicyError"),
        (BodyTooLarge("x"), 413, 413, "HTTPFailed"),
        (VerificationError("x", reason="kbs.nonce_mismatch"), 401, 401, "AttestationError"),
        (DependencyError("x"), 503, 401, "AttestationError"),
        (ConfigError("x"), 503, 401, "AttestationError"),
    ],
)
def test_error_map(exc: TrustpodError, status: int, upstream: int, variant: str) -> None:
    ours = error_reply(exc)
    theirs = error_reply(exc, upstream_status_codes=True, request_id="r1")
    assert (ours.status, theirs.status) == (status, upstream)
    assert ours.variant == theirs.variant == variant
    body = json.loads(theirs.body())
    assert body == {"type": PREFIX + variant, "detail": "x (request id r1)"}
    assert theirs.headers()["x-request-id"] == "r1"
    assert len(ours.request_id) == 32


def test_resource_path_label_is_bounded() -> None:
    m = KbsMetrics(max_resource_path_labels=2)
    labels = [m.path_label(p) for p in ("a/b/c", "a/b/d", "a/b/e", "a/b/c", "x/y/z")]
    assert labels == ["a/b/c", "a/b/d", OVERFLOW_LABEL, "a/b/c", OVERFLOW_LABEL]
    for p in labels:
        m.resource_reads.labels(p).inc()
    text = m.render().decode()
    assert f'kbs_resource_reads_total{{resource_path="{OVERFLOW_LABEL}"}} 2.0' in text
    assert "kbs_http_response_size_bytes_bucket" in text
    assert "_created" not in text
    # one registry per app: two instances do not clash
    KbsMetrics(1)
