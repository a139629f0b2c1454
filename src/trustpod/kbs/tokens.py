"""Attestation-token (EAR JWT) checks for resource requests (reference §1.6).

Every token is verified, whether it came from the session cookie or ``Authorization: Bearer``,
by the one ``TokenVerifier`` (``trustpod.attestation.token_verify``: header ``jwk`` trusted by
thumbprint, ``x5c`` chains to ``trusted_certs_paths``, ``kid`` in ``trusted_jwk_sets``,
``insecure_header_jwk``; ``exp`` required with 60 s leeway; verified claims cached by the
token's SHA-256 until ``exp``). Here: ``build_token_verifier`` trusts the KBS's own signer key and
reads the trust files from local paths, and the TEE public key is found at upstream's JSON
pointers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from trustpod._internal.clock import Clock
from trustpod.attestation.token_verify import TokenVerifier
from trustpod.errors import AuthenticationError, ConfigError

__all__ = [
    "BUILTIN_TEEKEY_PATHS",
    "TokenVerifier",
    "build_token_verifier",
    "find_tee_pubkey",
    "json_pointer",
]

_log = logging.getLogger(__name__)

BUILTIN_TEEKEY_PATHS = (
    "/tdx/attester_runtime_data/tee-pubkey",
    "/tdx/attester_user_data/tee-pubkey",
    "/customized_claims/runtime_data/tee-pubkey",
    "/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey",
    "/tee-pubkey",
)
EXP_LEEWAY_S = 60


def _fail(message: str, reason: str = "kbs.token_invalid") -> AuthenticationError:
    return AuthenticationError(message, reason=reason, fix="attest again to get a fresh token")


def json_pointer(doc: Any, pointer: str) -> Any:
    """RFC 6901 lookup; ``None`` when the path does not exist."""
    if pointer == "":
        return doc
    cur = doc
    for raw in pointer.lstrip("/").split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return None
    return cur


def find_tee_pubkey(claims: Mapping[str, Any], extra_paths: Iterable[str] = ()) -> Any:
    """The first tee-pubkey found at ``extra_paths`` then the built-in pointers."""
    for pointer in (*extra_paths, *BUILTIN_TEEKEY_PATHS):
        found = json_pointer(claims, pointer)
        if found is not None:
            return found
    raise _fail("the attestation token carries no tee-pubkey", "kbs.token_no_teekey")


def build_token_verifier(
    clock: Clock,
    *,
    own_keys: Iterable[Mapping[str, Any]] = (),
    trusted_jwk_sets: Iterable[str] = (),
    trusted_certs_paths: Iterable[str] = (),
    insecure_header_jwk: bool = False,
) -> TokenVerifier:
    """The KBS's token verifier: the attestation service's ``TokenVerifier`` (the one class:
    key selection, signature, ``exp``, verified-claims cache) with the KBS's trust
    configuration read from local files and its own signer keys trusted. Build once per
    process."""
    jwks = [dict(k) for k in own_keys]
    for uri in trusted_jwk_sets:
        jwks.extend(_read_jwks(uri))
    roots = [c for p in trusted_certs_paths for c in _read_certs(p)]
    return TokenVerifier(
        roots,
        jwks,
        insecure_header_jwk=insecure_header_jwk,
        leeway=EXP_LEEWAY_S,
        clock=clock,
    )


def _local(uri: str) -> Path:
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if "://" in uri:
        raise ConfigError(
            f"attestation_token: remote URI {uri!r} is not supported",
            reason="config.unsupported",
            fix="download the JWKS/certificates to a file and use file://<path>",
        )
    return Path(uri)


def _read_jwks(uri: str) -> list[dict[str, Any]]:
    try:
        doc = json.loads(_local(uri).read_text())
        keys = doc["keys"]
        if not isinstance(keys, list):
            raise TypeError("keys")
        return [k for k in keys if isinstance(k, dict)]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read trusted JWKS {uri}: {exc}", reason="config.jwks") from exc


def _read_certs(uri: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(_local(uri).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read trusted certs {uri}: {exc}", reason="config.certs") from exc
