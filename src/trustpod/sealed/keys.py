"""Sealed-secret signing keys: P-256 JWKs, and ``kid`` classification (pure).

Upstream (guest-and-control-plane.md §3.3) resolves the verification key from ``kid``: a resource
URI (``kbs:///…``) means "fetch the public JWK from the KBS"; anything else is a file name under
the CDH's key directory, with path traversal refused. The key material is an EC P-256 JWK
(``{"kty":"EC","crv":"P-256","x":…,"y":…}``); trustpod also accepts a PEM public key so an
administrator can upload either form. ``keygen`` writes ``<kid>-private.json`` and
``<kid>-public.json`` like upstream's ``secret keygen``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trustpod._internal.b64 import b64url_decode, b64url_encode
from trustpod.errors import EvidenceError
from trustpod.sealed.resource_uri import ResourceUri, is_resource_uri

__all__ = [
    "COORDINATE_BYTES",
    "LOCAL_KID_PATTERN",
    "MAX_KEY_BYTES",
    "KidRef",
    "classify_kid",
    "generate_signing_key",
    "load_private_jwk",
    "load_public_key",
    "private_jwk",
    "public_jwk",
]

COORDINATE_BYTES = 32
#: Upper bound on a key file / KBS key resource.
MAX_KEY_BYTES = 16 * 1024
#: A local kid is a plain file name: no separators, no leading dot, bounded length.
LOCAL_KID_PATTERN = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_\-.]{0,127}")


@dataclass(frozen=True, slots=True)
class KidRef:
    """Where the verification key for ``kid`` lives: a KBS resource or a local file name."""

    kid: str
    uri: ResourceUri | None
    local_name: str | None


def classify_kid(kid: str) -> KidRef:
    """Classify a ``kid``; anything that is neither a valid URI nor a safe file name is refused."""
    if is_resource_uri(kid):
        return KidRef(kid=kid, uri=ResourceUri.parse(kid), local_name=None)
    if not LOCAL_KID_PATTERN.fullmatch(kid) or ".." in kid:
        raise EvidenceError(
            f"sealed secret kid {kid[:80]!r} is neither a kbs:/// URI nor a plain key name",
            reason="sealed.kid_invalid",
            fix="use kbs:///<repo>/<type>/<tag> or a name of letters, digits, '.', '_', '-'",
        )
    return KidRef(kid=kid, uri=None, local_name=kid)


def _bad_key(message: str) -> EvidenceError:
    return EvidenceError(message, reason="sealed.key_invalid")


def _coordinate(jwk: dict[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise _bad_key(f"JWK member {name!r} is missing")
    raw = b64url_decode(value, field=f"jwk.{name}")
    if len(raw) != COORDINATE_BYTES:
        raise _bad_key(f"JWK member {name!r} must be {COORDINATE_BYTES} bytes")
    return int.from_bytes(raw, "big")


def _jwk_object(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_KEY_BYTES:
        raise _bad_key(f"key material is over {MAX_KEY_BYTES} bytes")
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad_key("key material is neither a JWK nor a PEM public key") from exc
    if not isinstance(obj, dict) or obj.get("kty") != "EC" or obj.get("crv") != "P-256":
        raise _bad_key('the sealed-secret key must be an EC JWK with "crv": "P-256"')
    return obj


def load_public_key(data: bytes) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from a JWK (JSON) or a PEM SubjectPublicKeyInfo."""
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise _bad_key("PEM public key does not parse") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise _bad_key("the sealed-secret key must be an EC P-256 key")
        return key
    jwk = _jwk_object(data)
    try:
        numbers = ec.EllipticCurvePublicNumbers(
            _coordinate(jwk, "x"), _coordinate(jwk, "y"), ec.SECP256R1()
        )
        return numbers.public_key()
    except ValueError as exc:
        raise _bad_key("JWK point is not on the P-256 curve") from exc


def load_private_jwk(data: bytes) -> ec.EllipticCurvePrivateKey:
    """The signing key from a private P-256 JWK (``d`` present), checked against ``x``/``y``."""
    jwk = _jwk_object(data)
    d = jwk.get("d")
    if not isinstance(d, str):
        raise _bad_key("JWK has no private member 'd' (is this the public key file?)")
    raw = b64url_decode(d, field="jwk.d")
    if len(raw) != COORDINATE_BYTES:
        raise _bad_key("JWK member 'd' must be 32 bytes")
    try:
        key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except ValueError as exc:
        raise _bad_key("JWK private scalar is out of range") from exc
    pub = key.public_key().public_numbers()
    if (pub.x, pub.y) != (_coordinate(jwk, "x"), _coordinate(jwk, "y")):
        raise _bad_key("JWK private key does not match its x/y")
    return key


def generate_signing_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 signing key."""
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: ec.EllipticCurvePublicKey, kid: str | None = None) -> dict[str, str]:
    """``{"kty","crv","x","y"[,"kid","alg","use"]}`` for a P-256 public key."""
    n = key.public_numbers()
    out = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(n.x.to_bytes(COORDINATE_BYTES, "big")),
        "y": b64url_encode(n.y.to_bytes(COORDINATE_BYTES, "big")),
        "alg": "ES256",
        "use": "sig",
    }
    if kid is not None:
        out["kid"] = kid
    return out


def private_jwk(key: ec.EllipticCurvePrivateKey, kid: str | None = None) -> dict[str, str]:
    """The public JWK plus ``d``."""
    out = public_jwk(key.public_key(), kid)
    out["d"] = b64url_encode(key.private_numbers().private_value.to_bytes(COORDINATE_BYTES, "big"))
    return out
