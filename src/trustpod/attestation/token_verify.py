"""Attestation-token (EAR JWT) verification (protocol §1.6, upstream ``kbs/src/token``).

Key selection, as upstream's ``TokenVerifier``:
* header ``jwk`` whose thumbprint is one of ``trusted_jwks``: trusted directly;
* header ``jwk`` with ``x5c``: the leaf must carry the jwk and the chain must end at one of
  ``trusted_certs`` (checked at the clock's time);
* header ``jwk`` alone: only with ``insecure_header_jwk`` (warns at construction);
* header ``kid``: looked up in ``trusted_jwks``.
Then: signature with the key's algorithm, ``exp`` required (``leeway`` seconds, default 60).

Speed: parsed keys are cached by RFC 7638 thumbprint and validated x5c chains by their exact
encoding; verified claims are cached by the token's SHA-256 until ``exp`` (a token seen before
costs one dict lookup and the ``exp`` check), and a caller that signed a token itself (the KBS's
built-in attestation service) seeds that cache with ``remember``. This is the one token
verifier: the KBS builds it with its trust configuration (``trustpod.kbs.tokens``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from trustpod._internal.b64 import b64_decode, b64url_decode
from trustpod._internal.clock import Clock, SystemClock
from trustpod._internal.json_limits import loads as limited_loads
from trustpod.errors import AuthenticationError, ConfigError, EvidenceError

__all__ = [
    "CACHE_ENTRIES",
    "DEFAULT_LEEWAY_S",
    "MAX_TOKEN_CHARS",
    "TokenVerifier",
    "jwk_public_key",
    "jwk_thumbprint",
    "token_digest",
]

_log = logging.getLogger(__name__)
DEFAULT_LEEWAY_S = 60
MAX_TOKEN_CHARS = 1 << 20
_MAX_CACHED = 1024
#: Verified tokens whose claims are kept (oldest dropped first).
CACHE_ENTRIES = 8192
_EC = {
    "P-256": (ec.SECP256R1(), 32, hashes.SHA256(), "ES256"),
    "P-384": (ec.SECP384R1(), 48, hashes.SHA384(), "ES384"),
}
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def _fail(message: str, reason: str = "token.invalid") -> AuthenticationError:
    return AuthenticationError(message, reason=reason, fix="attest again to get a fresh token")


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint (hex) over the required members."""
    names = ("crv", "kty", "x", "y") if jwk.get("kty") == "EC" else ("e", "kty", "n")
    blob = json.dumps({n: jwk.get(n) for n in names}, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def jwk_public_key(jwk: Mapping[str, Any]) -> PublicKey:
    """A public key from an EC (P-256/P-384) or RSA JWK."""
    try:
        if jwk.get("kty") == "EC":
            curve, size, _, _ = _EC[str(jwk.get("crv"))]
            x = b64url_decode(str(jwk["x"]), field="jwk.x")
            y = b64url_decode(str(jwk["y"]), field="jwk.y")
            if len(x) != size or len(y) != size:
                raise ValueError("coordinate length")
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
            ).public_key()
        if jwk.get("kty") == "RSA":
            n = int.from_bytes(b64url_decode(str(jwk["n"]), field="jwk.n"), "big")
            e = int.from_bytes(b64url_decode(str(jwk["e"]), field="jwk.e"), "big")
            return rsa.RSAPublicNumbers(e, n).public_key()
    except (KeyError, ValueError, EvidenceError) as exc:
        raise _fail("token key (jwk) is invalid", "token.jwk") from exc
    raise _fail("token key type is not supported", "token.jwk")


def token_digest(token: str) -> bytes:
    """SHA-256 of a token: the key of the verified-claims cache (and of the KBS's memos)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def _spki(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


class TokenVerifier:
    """Verifies EAR tokens; build once per process."""

    def __init__(
        self,
        trusted_certs: Sequence[x509.Certificate] = (),
        trusted_jwks: Sequence[Mapping[str, Any]] = (),
        insecure_header_jwk: bool = False,
        leeway: int = DEFAULT_LEEWAY_S,
        *,
        clock: Clock | None = None,
    ) -> None:
        if not trusted_certs and not trusted_jwks and not insecure_header_jwk:
            raise ConfigError(
                "Cannot verify token since no trusted verification materials are provided",
                reason="config.token_trust",
                fix="set attestation_token.trusted_certs_paths or trusted_jwk_sets",
            )
        self._roots = list(trusted_certs)
        self._by_thumb: dict[str, tuple[PublicKey, Mapping[str, Any]]] = {}
        self._by_kid: dict[str, tuple[PublicKey, Mapping[str, Any]]] = {}
        for jwk in trusted_jwks:
            entry = (jwk_public_key(jwk), jwk)
            self._by_thumb[jwk_thumbprint(jwk)] = entry
            if isinstance(jwk.get("kid"), str):
                self._by_kid[jwk["kid"]] = entry
        self._insecure = insecure_header_jwk
        self._leeway = leeway
        self._clock: Clock = clock or SystemClock()
        self._header_keys: dict[str, PublicKey] = {}
        self._chains: dict[tuple[str, ...], tuple[bytes, float, float]] = {}
        self._claims: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
        if insecure_header_jwk:
            _log.warning(
                "insecure_header_jwk: tokens signed by ANY key in their own header are "
                "accepted. Testing only."
            )

    def remember(self, token: str, claims: dict[str, Any]) -> None:
        """Seed the cache with a token the caller signed itself (its claims, as signed)."""
        self._keep(token_digest(token), claims)

    def _keep(self, digest: bytes, claims: dict[str, Any]) -> None:
        self._claims[digest] = claims
        if len(self._claims) > CACHE_ENTRIES:
            self._claims.popitem(last=False)

    def verify(self, token: str) -> dict[str, Any]:
        """The verified claims; ``AuthenticationError`` naming the failed check otherwise."""
        return self.verify_keyed(token)[0]

    def verify_keyed(self, token: str) -> tuple[dict[str, Any], bytes]:
        """``verify`` plus ``token_digest(token)``, computed once (callers key memos by it)."""
        # (1) Compact JWS with JSON header and claims.
        if len(token) > MAX_TOKEN_CHARS:
            raise _fail("attestation token too large")
        # (0) A token verified (or signed) before: only exp is checked again.
        digest = token_digest(token)
        cached = self._claims.get(digest)
        if cached is not None:
            if cached.get("exp", 0) + self._leeway < self._clock.time():
                self._claims.pop(digest, None)
                raise _fail("attestation token expired", "token.expired")
            return cached, digest
        claims = self._verify(token)
        self._keep(digest, claims)
        return claims, digest

    def _verify(self, token: str) -> dict[str, Any]:
        parts = token.split(".")
        if len(parts) != 3:
            raise _fail("attestation token is not a compact JWS")
        try:
            header = limited_loads(b64url_decode(parts[0], field="token header"))
            signature = b64url_decode(parts[2], field="token signature")
        except (EvidenceError, ValueError, UnicodeDecodeError) as exc:
            raise _fail("attestation token is malformed") from exc
        if not isinstance(header, dict):
            raise _fail("attestation token header is not an object")
        # (2) Select a trusted key.
        key, jwk = self._select_key(header)
        alg = jwk.get("alg") or header.get("alg")
        if header.get("alg") != alg:
            raise _fail("token alg does not match its key", "token.alg")
        # (3) Signature over "<header>.<claims>".
        self._check_signature(key, str(alg), f"{parts[0]}.{parts[1]}".encode(), signature)
        try:
            claims = limited_loads(b64url_decode(parts[1], field="token claims"))
        except (EvidenceError, ValueError, UnicodeDecodeError) as exc:
            raise _fail("attestation token claims are malformed") from exc
        if not isinstance(claims, dict):
            raise _fail("attestation token claims are not an object")
        # (4) exp required; nbf honoured when present (jsonwebtoken defaults, 60 s leeway).
        now = self._clock.time()
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise _fail("attestation token has no exp claim", "token.exp")
        if exp + self._leeway < now:
            raise _fail("attestation token expired", "token.expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and not isinstance(nbf, bool) and nbf - self._leeway > now:
            raise _fail("attestation token is not valid yet", "token.nbf")
        return claims

    def _select_key(self, header: Mapping[str, Any]) -> tuple[PublicKey, Mapping[str, Any]]:
        jwk = header.get("jwk")
        if isinstance(jwk, Mapping):
            thumb = jwk_thumbprint(jwk)
            trusted = self._by_thumb.get(thumb)
            if trusted is not None:
                return trusted[0], jwk
            key = self._header_keys.get(thumb)
            if key is None:
                key = jwk_public_key(jwk)
                if len(self._header_keys) >= _MAX_CACHED:
                    self._header_keys.clear()
                self._header_keys[thumb] = key
            if self._insecure:
                return key, jwk
            x5c = jwk.get("x5c")
            if isinstance(x5c, list) and x5c and self._roots:
                self._check_chain(key, tuple(str(c) for c in x5c))
                return key, jwk
            raise _fail("attestation token is signed by an untrusted key", "token.untrusted")
        kid = header.get("kid")
        if isinstance(kid, str) and kid in self._by_kid:
            return self._by_kid[kid]
        raise _fail("attestation token names no trusted key", "token.untrusted")

    def _check_chain(self, key: PublicKey, x5c: tuple[str, ...]) -> None:
        now = self._clock.time()
        cached = self._chains.get(x5c)
        if cached is None:
            cached = self._validate_chain(x5c)
            if len(self._chains) >= _MAX_CACHED:
                self._chains.clear()
            self._chains[x5c] = cached
        leaf_spki, not_before, not_after = cached
        if not not_before <= now <= not_after:
            raise _fail("a certificate in the token x5c chain is not valid now", "token.chain")
        if leaf_spki != _spki(key):
            raise _fail("token jwk does not match its x5c leaf", "token.chain")

    def _validate_chain(self, x5c: tuple[str, ...]) -> tuple[bytes, float, float]:
        try:
            chain = [x509.load_der_x509_certificate(b64_decode(c, field="x5c")) for c in x5c]
        except (EvidenceError, ValueError) as exc:
            raise _fail("token x5c chain is malformed", "token.chain") from exc
        # (a) each certificate is issued by the next one;
        for cert, issuer in itertools.pairwise(chain):
            try:
                cert.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature) as exc:
                raise _fail("token x5c chain is broken", "token.chain") from exc
        # (b) the last one is a trusted certificate or issued by one.
        last = chain[-1]
        if not any(last == root or self._issued_by(last, root) for root in self._roots):
            raise _fail("token x5c chain does not lead to a trusted certificate", "token.chain")
        not_before = max(c.not_valid_before_utc.timestamp() for c in chain)
        not_after = min(c.not_valid_after_utc.timestamp() for c in chain)
        return _spki(chain[0].public_key()), not_before, not_after

    @staticmethod
    def _issued_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
        try:
            cert.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    @staticmethod
    def _check_signature(key: PublicKey, alg: str, data: bytes, signature: bytes) -> None:
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                spec = next((v for v in _EC.values() if v[0].name == key.curve.name), None)
                if spec is None or spec[3] != alg or len(signature) != 2 * spec[1]:
                    raise _fail("token signature does not fit its key", "token.signature")
                r = int.from_bytes(signature[: spec[1]], "big")
                s = int.from_bytes(signature[spec[1] :], "big")
                key.verify(encode_dss_signature(r, s), data, ec.ECDSA(spec[2]))
            elif alg == "RS256":
                key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            else:
                raise _fail(f"token alg {alg[:16]!r} is not supported", "token.alg")
        except InvalidSignature as exc:
            raise _fail("attestation token signature is invalid", "token.signature") from exc
