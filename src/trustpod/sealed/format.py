"""The sealed-secret wire string (pure; guest-and-control-plane.md §3.3).

``sealed.<B64URL(header)>.<B64URL(payload)>.<B64URL(signature)>``: a compact JWS behind the
``sealed.`` prefix, base64url without padding everywhere, header ``{"alg":"ES256","kid":…}``
(any other ``alg`` is refused), signature = raw ``r||s`` (64 bytes) of ECDSA P-256/SHA-256 over
ASCII ``"<header_b64>.<payload_b64>"``. Built on ``cryptography`` rather than a JOSE library
because the format pins one algorithm, forbids padding and carries a prefix (ADR 0700).

The legacy unsigned form ``sealed.fakejwsheader.<payload>.fakesignature`` (pre-v0.18) is parsed
only with ``allow_unsigned=True`` (the CDH's ``skip_sealed_secret_verification``); callers warn
every time they use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from trustpod._internal.b64 import b64url_decode, b64url_encode
from trustpod.errors import EvidenceError, VerificationError
from trustpod.sealed.payload import SecretPayload, parse_payload, payload_json

__all__ = [
    "ALG",
    "LEGACY_HEADER",
    "LEGACY_SIGNATURE",
    "MAX_SEALED_CHARS",
    "PREFIX",
    "SIGNATURE_BYTES",
    "SealedSecret",
    "insecure_seal_unsigned",
    "is_sealed",
    "parse",
    "seal",
    "verify",
]

PREFIX = "sealed"
ALG = "ES256"
LEGACY_HEADER = "fakejwsheader"
LEGACY_SIGNATURE = "fakesignature"
SIGNATURE_BYTES = 64
#: Upper bound on a sealed string (named limit; Kubernetes Secrets are at most 1 MiB).
MAX_SEALED_CHARS = 256 * 1024
#: Upper bound on the header JSON.
MAX_HEADER_CHARS = 1024
_SECTIONS = 4
_COORD = SIGNATURE_BYTES // 2


@dataclass(frozen=True, slots=True)
class SealedSecret:
    """A parsed sealed string. ``signed`` is False only for the legacy/unchecked form."""

    header: dict[str, Any]
    kid: str | None
    payload: SecretPayload
    signing_input: bytes
    signature: bytes
    signed: bool


def is_sealed(value: str) -> bool:
    """Kata's test: the value starts with ``sealed.``."""
    return value.startswith(PREFIX + ".")


def _bad(message: str, reason: str = "sealed.malformed") -> EvidenceError:
    return EvidenceError(f"sealed secret: {message}", reason=reason)


def _header(text: str) -> dict[str, Any]:
    if len(text) > MAX_HEADER_CHARS:
        raise _bad("protected header too long")
    try:
        obj = json.loads(b64url_decode(text, field="sealed header"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad("protected header is not JSON") from exc
    if not isinstance(obj, dict):
        raise _bad("protected header is not a JSON object")
    return obj


def parse(text: str, *, allow_unsigned: bool = False) -> SealedSecret:
    """Parse a ``sealed.`` string (not yet verified: call ``verify``).

    Args:
        allow_unsigned: upstream's skip-verification mode: any 4-section string whose third section
            is the payload, including ``sealed.fakejwsheader.<payload>.fakesignature``.
    """
    # (1) size, prefix and exactly four dot-separated sections (§3.3)
    if len(text) > MAX_SEALED_CHARS:
        raise _bad(f"longer than {MAX_SEALED_CHARS} characters", "sealed.too_large")
    text = text.strip()
    parts = text.split(".")
    if len(parts) != _SECTIONS or parts[0] != PREFIX:
        raise _bad("expected sealed.<header>.<payload>.<signature>")
    _, header_b64, payload_b64, sig_b64 = parts
    if any(p.endswith("=") for p in parts[1:]):
        raise _bad("base64url padding is not allowed (upstream rejects it)", "sealed.padding")
    # (2) legacy / unchecked form only when the caller explicitly skips verification; like
    # upstream's skip mode, any header that does not parse then counts as "unsigned"
    legacy = header_b64 == LEGACY_HEADER or sig_b64 == LEGACY_SIGNATURE
    if allow_unsigned and not legacy:
        try:
            _header(header_b64)
        except EvidenceError:
            legacy = True
    if legacy:
        if not allow_unsigned:
            raise VerificationError(
                "sealed secret is in the legacy unsigned form (fakejwsheader)",
                reason="sealed.unsigned",
                fix="re-seal it with `trustpod secret seal --signing-kid ...`, or set "
                "skip_sealed_secret_verification = true in cdh.toml (insecure)",
            )
        payload = parse_payload(b64url_decode(payload_b64, field="sealed payload"))
        return SealedSecret({}, None, payload, b"", b"", signed=False)
    # (3) protected header: alg pinned to ES256, kid required
    header = _header(header_b64)
    if header.get("alg") != ALG:
        raise VerificationError(
            f"sealed secret alg must be {ALG}, got {header.get('alg')!r}", reason="sealed.alg"
        )
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _bad("protected header has no kid", "sealed.kid_missing")
    # (4) payload and signature
    payload = parse_payload(b64url_decode(payload_b64, field="sealed payload"))
    signature = b64url_decode(sig_b64, field="sealed signature")
    if len(signature) != SIGNATURE_BYTES and not allow_unsigned:
        raise _bad(f"ES256 signature must be {SIGNATURE_BYTES} bytes", "sealed.signature")
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    return SealedSecret(header, kid, payload, signing_input, signature, signed=True)


def verify(sealed: SealedSecret, public_key: ec.EllipticCurvePublicKey) -> None:
    """Check the ES256 signature; raises ``VerificationError`` (never returns False)."""
    if not sealed.signed or len(sealed.signature) != SIGNATURE_BYTES:
        raise VerificationError("sealed secret is not signed", reason="sealed.unsigned")
    if public_key.curve.name != "secp256r1":
        raise VerificationError("sealed secret key is not P-256", reason="sealed.key_invalid")
    r = int.from_bytes(sealed.signature[:_COORD], "big")
    s = int.from_bytes(sealed.signature[_COORD:], "big")
    try:
        public_key.verify(
            encode_dss_signature(r, s), sealed.signing_input, ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature as exc:
        raise VerificationError(
            f"sealed secret signature does not verify with key {sealed.kid!r}",
            reason="sealed.signature",
            fix="was it sealed with a different signing key than the one published under kid?",
        ) from exc


def seal(payload: SecretPayload, signing_key: ec.EllipticCurvePrivateKey, kid: str) -> str:
    """Sign ``payload`` as ``sealed.<hdr>.<payload>.<sig>`` with an ES256 key."""
    if signing_key.curve.name != "secp256r1":
        raise EvidenceError("sealed secrets are signed with P-256 keys", reason="sealed.key")
    header = json.dumps({"alg": ALG, "kid": kid}, separators=(",", ":")).encode("utf-8")
    signing_input = f"{b64url_encode(header)}.{b64url_encode(payload_json(payload))}"
    der = signing_key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    sig = r.to_bytes(_COORD, "big") + s.to_bytes(_COORD, "big")
    return f"{PREFIX}.{signing_input}.{b64url_encode(sig)}"


def insecure_seal_unsigned(payload: SecretPayload) -> str:
    """The legacy unsigned form (tests and migration only; accepted only with skip-verification)."""
    return f"{PREFIX}.{LEGACY_HEADER}.{b64url_encode(payload_json(payload))}.{LEGACY_SIGNATURE}"
