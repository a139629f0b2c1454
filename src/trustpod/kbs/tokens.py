"""Attestation-token (EAR JWT) checks for resource requests (reference §1.6).

Every token is verified, whether it came from the session cookie or ``Authorization: Bearer``,
by the attestation service's ``TokenVerifier`` (``trustpod.attestation.token_verify``: header
``jwk`` trusted by thumbprint, ``x5c`` chains to ``trusted_certs_paths``, ``kid`` in
``trusted_jwk_sets``, ``insecure_header_jwk``; ``exp`` required with 60 s leeway). The KBS adds:
its own signer key is trusted automatically, trust files are read from local paths, verified
claims are cached by the token's SHA-256 until ``exp`` (a hot token costs one dict lookup), and
the TEE public key is found at upstream's JSON pointers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from trustpod._internal.clock import Clock
from trustpod.errors import AuthenticationError, ConfigError

__all__ = ["BUILTIN_TEEKEY_PATHS", "TokenVerifier", "find_tee_pubkey", "json_pointer"]

_log = logging.getLogger(__name__)

BUILTIN_TEEKEY_PATHS = (
    "/tdx/attester_runtime_data/tee-pubkey",
    "/tdx/attester_user_data/tee-pubkey",
    "/customized_claims/runtime_data/tee-pubkey",
    "/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey",
    "/tee-pubkey",
)
EXP_LEEWAY_S = 60
MAX_TOKEN_CHARS = 1 << 20
CACHE_ENTRIES = 8192


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


class TokenVerifier:
    """The KBS's token check: the attestation service's ``TokenVerifier`` (key selection,
    signature, ``exp``) with the KBS's trust configuration, behind a cache of verified claims
    keyed by the token's SHA-256 (until ``exp``). Construct once per process."""

    def __init__(
        self,
        clock: Clock,
        *,
        own_keys: Iterable[Mapping[str, Any]] = (),
        trusted_jwk_sets: Iterable[str] = (),
        trusted_certs_paths: Iterable[str] = (),
        insecure_header_jwk: bool = False,
    ) -> None:
        from trustpod.attestation.token_verify import TokenVerifier as EarVerifier

        self._clock = clock
        jwks = [dict(k) for k in own_keys]
        for uri in trusted_jwk_sets:
            jwks.extend(_read_jwks(uri))
        roots = [c for p in trusted_certs_paths for c in _read_certs(p)]
        self._inner = EarVerifier(
            roots,
            jwks,
            insecure_header_jwk=insecure_header_jwk,
            leeway=EXP_LEEWAY_S,
            clock=clock,
        )
        self._cache: OrderedDict[bytes, dict[str, Any]] = OrderedDict()

    def remember(self, token: str, claims: dict[str, Any]) -> None:
        """Seed the cache with a token this process's own attestation service just signed."""
        self._cache[hashlib.sha256(token.encode("utf-8", "replace")).digest()] = claims
        if len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)

    def verify(self, token: str) -> dict[str, Any]:
        """The verified claims, or ``AuthenticationError`` naming the failed check."""
        if len(token) > MAX_TOKEN_CHARS:
            raise _fail("attestation token too large")
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            if cached["exp"] + EXP_LEEWAY_S < self._clock.time():
                self._cache.pop(digest, None)
                raise _fail("attestation token expired", "kbs.token_expired")
            return cached
        claims = self._inner.verify(token)
        self._cache[digest] = claims
        if len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return claims


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
