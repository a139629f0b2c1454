"""Attestation-token (EAR JWT) verification for resource requests (reference §1.6).

Every token is verified, whether it came from the session cookie or ``Authorization: Bearer``:
* header ``jwk`` equal to one of the KBS's own attestation-service signer keys: trusted;
* header ``jwk`` with ``x5c``: the leaf must carry the jwk and the chain must end at one of
  ``trusted_certs_paths``;
* header ``jwk`` alone: only with ``insecure_header_jwk = true`` (warns);
* header ``kid``: looked up in ``trusted_jwk_sets`` (local ``file://`` JWKS files).
``exp`` is required (60 s leeway, as jsonwebtoken). Verified claims are cached by the token's
SHA-256 until ``exp`` so a hot token costs one dict lookup (no per-request key parsing).
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
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from trustpod._internal.b64 import b64url_decode
from trustpod._internal.clock import Clock
from trustpod.errors import AuthenticationError, ConfigError, EvidenceError
from trustpod.kbs.jwks import PublicKey, jwk_to_key, verify_jws_signature

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
#: insecure_header_jwk use is warned at most this often (not per request: log flooding).
INSECURE_WARN_EVERY_S = 60.0


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
    """Verifies attestation tokens; construct once per process (keys parsed at startup)."""

    def __init__(
        self,
        clock: Clock,
        *,
        own_keys: Iterable[Mapping[str, Any]] = (),
        trusted_jwk_sets: Iterable[str] = (),
        trusted_certs_paths: Iterable[str] = (),
        insecure_header_jwk: bool = False,
    ) -> None:
        self._clock = clock
        self._own = {self._fingerprint(k): jwk_to_key(k) for k in own_keys}
        self._kids: dict[str, PublicKey] = {}
        for uri in trusted_jwk_sets:
            for jwk in _read_jwks(uri):
                if isinstance(jwk.get("kid"), str):
                    self._kids[jwk["kid"]] = jwk_to_key(jwk)
        self._roots = [c for p in trusted_certs_paths for c in _read_certs(p)]
        self._insecure = insecure_header_jwk
        if insecure_header_jwk:
            _log.warning(
                "attestation_token.insecure_header_jwk = true: tokens signed by ANY key in their "
                "own header are accepted. Testing only."
            )
        self._cache: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
        self._last_insecure_warning = float("-inf")

    def add_own_key(self, jwk: Mapping[str, Any]) -> None:
        self._own[self._fingerprint(jwk)] = jwk_to_key(jwk)

    @staticmethod
    def _fingerprint(jwk: Mapping[str, Any]) -> str:
        return json.dumps({k: jwk.get(k) for k in ("kty", "crv", "x", "y", "n", "e")})

    def verify(self, token: str) -> dict[str, Any]:
        """The verified claims, or ``AuthenticationError`` naming the failed check."""
        if len(token) > MAX_TOKEN_CHARS:
            raise _fail("attestation token too large")
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        now = self._clock.time()
        cached = self._cache.get(digest)
        if cached is not None:
            if cached["exp"] + EXP_LEEWAY_S < now:
                self._cache.pop(digest, None)
                raise _fail("attestation token expired", "kbs.token_expired")
            return cached
        claims = self._verify_uncached(token, now)
        self._cache[digest] = claims
        if len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return claims

    def _verify_uncached(self, token: str, now: float) -> dict[str, Any]:
        parts = token.split(".")
        if len(parts) != 3:
            raise _fail("attestation token is not a compact JWS")
        try:
            header = json.loads(b64url_decode(parts[0], field="token header"))
            claims = json.loads(b64url_decode(parts[1], field="token claims"))
            signature = b64url_decode(parts[2], field="token signature")
        except (EvidenceError, ValueError, UnicodeDecodeError) as exc:
            raise _fail("attestation token is malformed") from exc
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise _fail("attestation token is malformed")
        alg = header.get("alg")
        key = self._select_key(header)
        # (1) Signature over "<header>.<claims>" with the key's algorithm.
        try:
            verify_jws_signature(key, str(alg), f"{parts[0]}.{parts[1]}".encode(), signature)
        except (InvalidSignature, ValueError) as exc:
            raise _fail("attestation token signature is invalid", "kbs.token_signature") from exc
        # (2) exp required and checked with 60 s leeway (jsonwebtoken default).
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise _fail("attestation token has no exp claim")
        if exp + EXP_LEEWAY_S < now:
            raise _fail("attestation token expired", "kbs.token_expired")
        return claims

    def _select_key(self, header: Mapping[str, Any]) -> PublicKey:
        jwk = header.get("jwk")
        if isinstance(jwk, Mapping):
            own = self._own.get(self._fingerprint(jwk))
            if own is not None:
                return own
            x5c = jwk.get("x5c") or header.get("x5c")
            if isinstance(x5c, list) and x5c and self._roots:
                return self._check_chain(jwk, x5c)
            if self._insecure:
                now = self._clock.time()
                if now - self._last_insecure_warning >= INSECURE_WARN_EVERY_S:
                    self._last_insecure_warning = now
                    _log.warning(
                        "accepted a token signed by its own header jwk (insecure_header_jwk)"
                    )
                try:
                    return jwk_to_key(jwk)
                except ConfigError as exc:
                    raise _fail("token header jwk is invalid") from exc
            raise _fail(
                "attestation token is signed by an untrusted key",
                "kbs.token_untrusted",
            )
        kid = header.get("kid")
        if isinstance(kid, str) and kid in self._kids:
            return self._kids[kid]
        raise _fail("attestation token names no trusted key", "kbs.token_untrusted")

    def _check_chain(self, jwk: Mapping[str, Any], x5c: list[Any]) -> PublicKey:
        from trustpod._internal.b64 import b64_decode

        try:
            chain = [x509.load_der_x509_certificate(b64_decode(str(c), field="x5c")) for c in x5c]
            key = jwk_to_key(jwk)
        except (EvidenceError, ConfigError, ValueError) as exc:
            raise _fail("token x5c chain is malformed") from exc
        if _spki(chain[0].public_key()) != _spki(key):
            raise _fail("token jwk does not match its x5c leaf", "kbs.token_untrusted")
        now = self._clock.now()
        for cert, issuer in zip(chain, [*chain[1:], None], strict=True):
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise _fail("a certificate in the token x5c chain is expired", "kbs.token_chain")
            for cand in [issuer] if issuer is not None else self._roots:
                try:
                    cert.verify_directly_issued_by(cand)
                    break
                except (ValueError, TypeError, InvalidSignature):
                    continue
            else:
                if issuer is None and any(cert == r for r in self._roots):
                    continue
                raise _fail("token x5c chain is not trusted", "kbs.token_chain")
        return key


def _spki(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


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
