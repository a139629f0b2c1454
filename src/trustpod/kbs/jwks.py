"""JWK/PEM keys and JWS signatures over ``cryptography`` (parsed once, verified many times).

Small on purpose: jwcrypto/joserfc re-parse keys and headers on every call, and the resource GET
hot path verifies a token per request; the primitives here are the library's own (ECDSA, RSA
PKCS#1 v1.5, Ed25519). ``sign_jwt`` makes the EdDSA admin token written by ``trustpod kbs init``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from trustpod._internal.b64 import b64url_decode, b64url_encode
from trustpod.errors import ConfigError, EvidenceError

__all__ = [
    "PrivateKey",
    "PublicKey",
    "jwk_to_key",
    "load_public_pem",
    "sign_jwt",
    "verify_jws_signature",
]

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
_EC_ALGS = {"ES256": (hashes.SHA256(), 32), "ES384": (hashes.SHA384(), 48)}
_RSA_ALGS = {"RS256": hashes.SHA256(), "RS384": hashes.SHA384(), "RS512": hashes.SHA512()}


def _int(jwk: Mapping[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ConfigError(f"JWK member {name!r} missing", reason="jwk.malformed")
    try:
        return int.from_bytes(b64url_decode(value, field=f"jwk.{name}"), "big")
    except EvidenceError as exc:
        raise ConfigError(f"JWK member {name!r} is not base64url", reason="jwk.malformed") from exc


def jwk_to_key(jwk: Mapping[str, Any]) -> PublicKey:
    """A public key from a JWK (EC P-256/384/521, RSA, OKP Ed25519)."""
    kty = jwk.get("kty")
    try:
        if kty == "EC":
            curve = _CURVES.get(str(jwk.get("crv")))
            if curve is None:
                raise ConfigError("unsupported JWK curve", reason="jwk.malformed")
            return ec.EllipticCurvePublicNumbers(_int(jwk, "x"), _int(jwk, "y"), curve).public_key()
        if kty == "RSA":
            return rsa.RSAPublicNumbers(_int(jwk, "e"), _int(jwk, "n")).public_key()
        if kty == "OKP" and jwk.get("crv") == "Ed25519":
            raw = b64url_decode(str(jwk.get("x")), field="jwk.x")
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, EvidenceError) as exc:
        raise ConfigError(f"invalid JWK: {exc}", reason="jwk.malformed") from exc
    raise ConfigError(f"unsupported JWK kty {str(kty)[:16]!r}", reason="jwk.malformed")


def load_public_pem(data: bytes) -> PublicKey:
    """A PEM public key (SubjectPublicKeyInfo) or the public half of a PEM private key."""
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as exc:
            raise ConfigError("not a PEM public key", reason="config.key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise ConfigError("unsupported key type (use EC, RSA or Ed25519)", reason="config.key")
    return key


def verify_jws_signature(key: PublicKey, alg: str, signing_input: bytes, signature: bytes) -> None:
    """Raise ``InvalidSignature``/``ValueError`` unless ``signature`` is valid for ``alg``."""
    if isinstance(key, ec.EllipticCurvePublicKey) and alg in _EC_ALGS:
        digest, size = _EC_ALGS[alg]
        if len(signature) != 2 * size:
            raise ValueError("bad ECDSA signature length")
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(digest))
        return
    if isinstance(key, rsa.RSAPublicKey) and alg in _RSA_ALGS:
        key.verify(signature, signing_input, padding.PKCS1v15(), _RSA_ALGS[alg])
        return
    if isinstance(key, ed25519.Ed25519PublicKey) and alg in ("EdDSA", "Ed25519"):
        key.verify(signature, signing_input)
        return
    raise ValueError(f"algorithm {alg[:16]!r} does not fit the key")


def sign_jwt(key: PrivateKey, claims: Mapping[str, Any]) -> str:
    """A compact JWS over ``claims`` (EdDSA for Ed25519, ES256 for P-256, RS256 for RSA)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        alg = "EdDSA"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        alg = "ES256"
    else:
        alg = "RS256"
    header = b64url_encode(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url_encode(json.dumps(dict(claims), separators=(",", ":")).encode())
    signing_input = f"{header}.{body}".encode()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        sig = key.sign(signing_input)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{body}.{b64url_encode(sig)}"
