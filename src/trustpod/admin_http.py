"""One KBS admin HTTP call (``/kbs/v0/...`` with the admin bearer token) — the I/O edge shared by
``trustpod admin``, ``image encrypt --publish`` and ``image build --publish``.

Success is exactly 200, as upstream's ``kbs-client`` expects. Any other answer raises from the one
error tree, with the KBS's ``detail`` and a fix:
- 401: ``AuthenticationError``;
- 403: ``PolicyDenied``;
- 404: ``NotFoundError``;
- 400 or 413: ``EvidenceError``;
- anything else: ``DependencyError``.
The reason is ``<prefix>.http_<status>``; ``<prefix>.connect`` means the KBS was not reached.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from trustpod.errors import (
    AuthenticationError,
    ConfigError,
    DependencyError,
    EvidenceError,
    NotFoundError,
    PolicyDenied,
    TrustpodError,
)

__all__ = ["DEFAULT_TIMEOUT_S", "admin_request"]

#: Seconds for one admin call (connect + answer).
DEFAULT_TIMEOUT_S = 30.0


def _verify(cert_file: Path | str | None) -> Any:
    if not cert_file:
        return True
    try:
        return ssl.create_default_context(cafile=str(cert_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load --cert-file {cert_file}: {exc}", reason="admin.cert_file"
        ) from exc


def admin_request(
    base_url: str,
    method: str,
    path: str,
    *,
    token: str | None,
    cert_file: Path | str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    reason_prefix: str = "admin",
    content_type: str | None = None,
    **kw: Any,
) -> Any:
    """``method base_url+path`` (``kw``: httpx's ``content=``/``json=``); the 200 response."""
    import httpx  # an admin tool's import: not on the guest's or the KBS's start-up path

    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    if content_type is not None:
        headers["content-type"] = content_type
    try:
        with httpx.Client(verify=_verify(cert_file), timeout=timeout_s) as client:
            r = client.request(method, base_url.rstrip("/") + path, headers=headers, **kw)
    except httpx.HTTPError as exc:
        raise DependencyError(
            f"cannot reach the KBS at {base_url}: {exc}",
            reason=f"{reason_prefix}.connect",
            fix="check the KBS URL, that the KBS runs, and --cert-file for HTTPS",
        ) from exc
    if r.status_code == 200:
        return r
    try:
        detail = r.json()["detail"]
    except (ValueError, KeyError, TypeError):
        detail = r.text[:500]
    msg = f"KBS answered {r.status_code} to {method} {path}: {detail}"
    err: type[TrustpodError] = DependencyError
    fix = None
    if r.status_code == 401:
        err, fix = (
            AuthenticationError,
            "check --token-file (trustpod kbs init writes D/admin-token)",
        )
    elif r.status_code == 403:
        err, fix = PolicyDenied, "the token's role is not allowed on this endpoint (admin ACLs)"
    elif r.status_code == 404:
        err = NotFoundError
    elif r.status_code in (400, 413):
        err = EvidenceError
    raise err(msg, reason=f"{reason_prefix}.http_{r.status_code}", fix=fix)
