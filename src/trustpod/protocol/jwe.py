"""The KBS resource response: a flattened JWE built directly on ``cryptography`` (ADR 0100).

Layout (trustee-protocol.md §1.7, ``kbs/src/jwe/mod.rs``, kbs-types ``Response``):
``{"protected","encrypted_key","iv","ciphertext","tag"}``, all base64url without padding, no
``aad`` member. The protected header is compact JSON with ``alg``, ``enc``, then ``epk`` (its
members sorted). Content encryption is always A256GCM with AAD = ASCII of the ``protected``
string (RFC 7516 §5.1 step 14). Key management by the TEE key's ``alg``:
``ECDH-ES+A256KW`` (P-256/P-521, Concat KDF SHA-256, AES key wrap), ``RSA-OAEP-256`` and, only
with ``insecure_allow_rsa1_5``, ``RSA1_5``. Anything else: ``EvidenceError("kbs.jwe_unsupported")``.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from trustpod._internal.b64 import b64url_decode, b64url_encode
from trustpod.errors import EvidenceError, VerificationError
from trustpod.protocol.constants import JWE_DECRYPT, JWE_MALFORMED, JWE_UNSUPPORTED
from trustpod.protocol.tee_pubkey import EC_COORDINATE_BYTES, TeePubKey

__all__ = [
    "ALG_ECDH_ES_A256KW",
    "ALG_RSA1_5",
    "ALG_RSA_OAEP_256",
    "ENC_A256GCM",
    "MIN_RSA_BITS",
    "decrypt_response",
    "encrypt_response",
]

log = logging.getLogger(__name__)

ENC_A256GCM = "A256GCM"
ALG_ECDH_ES_A256KW = "ECDH-ES+A256KW"
ALG_RSA_OAEP_256 = "RSA-OAEP-256"
ALG_RSA1_5 = "RSA1_5"
CEK_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
#: Smallest RSA TEE key accepted (guest-components uses 2048).
MIN_RSA_BITS = 2048
#: Upper bound on the ``protected`` member when decrypting.
MAX_PROTECTED_CHARS = 4096

_CURVES: Mapping[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-521": ec.SECP521R1()}
_CURVE_NAMES: Mapping[str, str] = {"secp256r1": "P-256", "secp521r1": "P-521"}
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
_PKCS1V15 = padding.PKCS1v15()
_FIELDS = ("protected", "encrypted_key", "iv", "ciphertext", "tag")
_UNCOMPRESSED = serialization.PublicFormat.UncompressedPoint
_X962 = serialization.Encoding.X962


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _concat_kdf(z: bytes, apu: bytes = b"", apv: bytes = b"") -> bytes:
    """RFC 7518 §4.6.2 Concat KDF (SHA-256) for ECDH-ES+A256KW: a 256-bit KEK."""
    other = _lp(ALG_ECDH_ES_A256KW.encode()) + _lp(apu) + _lp(apv) + struct.pack(">I", 256)
    return ConcatKDFHash(hashes.SHA256(), 32, other).derive(z)


def _ec_point(crv: str, x: str, y: str) -> ec.EllipticCurvePublicKey:
    curve = _CURVES.get(crv)
    if curve is None:
        raise EvidenceError(f"curve {crv[:16]!r} is not supported for JWE", reason=JWE_UNSUPPORTED)
    size = EC_COORDINATE_BYTES[crv]
    xb, yb = b64url_decode(x, field="x"), b64url_decode(y, field="y")
    if len(xb) != size or len(yb) != size:
        raise EvidenceError("EC coordinates have the wrong length", reason=JWE_MALFORMED)
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + xb + yb)
    except ValueError as exc:
        raise EvidenceError(
            "EC public key is not a point on the curve", reason=JWE_MALFORMED
        ) from exc


@lru_cache(maxsize=4096)
def _ec_public_key(crv: str, x: str, y: str) -> ec.EllipticCurvePublicKey:
    """The TEE key, cached: one token key serves many resource GETs."""
    return _ec_point(crv, x, y)


@lru_cache(maxsize=1024)
def _rsa_public_key(n: str, e: str) -> rsa.RSAPublicKey:
    modulus = int.from_bytes(b64url_decode(n, field="n"), "big")
    exponent = int.from_bytes(b64url_decode(e, field="e"), "big")
    try:
        key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    except ValueError as exc:
        raise EvidenceError("RSA public key is invalid", reason=JWE_MALFORMED) from exc
    if key.key_size < MIN_RSA_BITS:
        raise EvidenceError(
            f"RSA TEE key has {key.key_size} bits, at least {MIN_RSA_BITS} required",
            reason=JWE_UNSUPPORTED,
        )
    return key


def _warn_rsa1_5() -> None:
    log.warning("insecure_allow_rsa1_5: wrapping/unwrapping a JWE key with deprecated RSA1_5")


def _wrap_cek(key: TeePubKey, cek: bytes, allow_rsa1_5: bool) -> tuple[dict[str, Any], bytes]:
    """(protected header, encrypted_key) for the TEE key (kbs/src/jwe/mod.rs dispatch)."""
    if key.kty == "EC" and key.alg == ALG_ECDH_ES_A256KW:
        # (1) Ephemeral ECDH on the TEE key's curve; Z → Concat KDF → KEK → AES-KW(CEK).
        peer = _ec_public_key(key.crv, key.x, key.y)
        eph = ec.generate_private_key(peer.curve)
        kek = _concat_kdf(eph.exchange(ec.ECDH(), peer))
        point = eph.public_key().public_bytes(_X962, _UNCOMPRESSED)
        size = (len(point) - 1) // 2
        epk = {
            "crv": key.crv,
            "kty": "EC",
            "x": b64url_encode(point[1 : 1 + size]),
            "y": b64url_encode(point[1 + size :]),
        }
        header = {"alg": ALG_ECDH_ES_A256KW, "enc": ENC_A256GCM, "epk": epk}
        return header, aes_key_wrap(kek, cek)
    if key.kty == "RSA" and key.alg == ALG_RSA_OAEP_256:
        enc_key = _rsa_public_key(key.n, key.e).encrypt(cek, _OAEP)
        return {"alg": ALG_RSA_OAEP_256, "enc": ENC_A256GCM}, enc_key
    if key.kty == "RSA" and key.alg == ALG_RSA1_5 and allow_rsa1_5:
        _warn_rsa1_5()
        enc_key = _rsa_public_key(key.n, key.e).encrypt(cek, _PKCS1V15)
        return {"alg": ALG_RSA1_5, "enc": ENC_A256GCM}, enc_key
    raise EvidenceError(
        f"unsupported TEE key for JWE: kty={key.kty} alg={key.alg[:32]}",
        reason=JWE_UNSUPPORTED,
        fix="use an EC P-256/P-521 key with ECDH-ES+A256KW or an RSA key with RSA-OAEP-256",
    )


def encrypt_response(
    plaintext: bytes,
    tee_pubkey: TeePubKey | Mapping[str, Any],
    *,
    insecure_allow_rsa1_5: bool = False,
) -> dict[str, str]:
    """Encrypt a resource for the TEE key; returns the flattened JWE JSON object."""
    key = tee_pubkey if isinstance(tee_pubkey, TeePubKey) else TeePubKey.from_json(tee_pubkey)
    cek = os.urandom(CEK_BYTES)
    header, encrypted_key = _wrap_cek(key, cek, insecure_allow_rsa1_5)
    # (2) Protected header: compact JSON, alg/enc first (serde order); AAD is its b64url text.
    protected = b64url_encode(json.dumps(header, separators=(",", ":")).encode("ascii"))
    iv = os.urandom(IV_BYTES)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return {
        "protected": protected,
        "encrypted_key": b64url_encode(encrypted_key),
        "iv": b64url_encode(iv),
        "ciphertext": b64url_encode(sealed[:-TAG_BYTES]),
        "tag": b64url_encode(sealed[-TAG_BYTES:]),
    }


def _malformed(message: str) -> EvidenceError:
    return EvidenceError(f"JWE response: {message}", reason=JWE_MALFORMED)


def _parse_header(protected: str, jwe: Mapping[str, Any]) -> Mapping[str, Any]:
    """The JOSE header: protected + ``unprotected`` + per-recipient ``header`` (RFC 7516 §7.2)."""
    if len(protected) > MAX_PROTECTED_CHARS:
        raise _malformed("protected header too long")
    try:
        header = json.loads(b64url_decode(protected, field="protected"))
    except (ValueError, RecursionError) as exc:
        raise _malformed("protected header is not JSON") from exc
    if not isinstance(header, dict):
        raise _malformed("protected header is not an object")
    for extra_name in ("unprotected", "header"):
        extra = jwe.get(extra_name)
        if extra is None:
            continue
        if not isinstance(extra, dict) or set(extra) & set(header):
            raise _malformed(f"{extra_name} must be an object disjoint from the other headers")
        header = {**header, **extra}
    if not isinstance(header.get("alg"), str) or not isinstance(header.get("enc"), str):
        raise _malformed("protected header lacks alg/enc")
    if header["enc"] != ENC_A256GCM or "zip" in header or "crit" in header:
        raise EvidenceError(
            f"unsupported JWE enc/zip/crit (enc={header['enc'][:16]})", reason=JWE_UNSUPPORTED
        )
    return header


def _unwrap_ecdh(
    header: Mapping[str, Any], enc_key: bytes, key: ec.EllipticCurvePrivateKey
) -> bytes:
    epk = header.get("epk")
    if not isinstance(epk, dict) or epk.get("kty") != "EC":
        raise _malformed("epk must be an EC JWK")
    crv, x, y = epk.get("crv"), epk.get("x"), epk.get("y")
    if not (isinstance(crv, str) and isinstance(x, str) and isinstance(y, str)):
        raise _malformed("epk members crv/x/y must be strings")
    if _CURVE_NAMES.get(key.curve.name) != crv:
        raise _malformed("epk curve does not match the TEE key")
    apu = b64url_decode(header["apu"], field="apu") if isinstance(header.get("apu"), str) else b""
    apv = b64url_decode(header["apv"], field="apv") if isinstance(header.get("apv"), str) else b""
    kek = _concat_kdf(key.exchange(ec.ECDH(), _ec_point(crv, x, y)), apu, apv)
    try:
        return aes_key_unwrap(kek, enc_key)
    except (InvalidUnwrap, ValueError) as exc:
        raise VerificationError("JWE key unwrap failed", reason=JWE_DECRYPT) from exc


def _unwrap(
    header: Mapping[str, Any],
    enc_key: bytes,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    allow_rsa1_5: bool,
) -> bytes:
    alg = header["alg"]
    if alg == ALG_ECDH_ES_A256KW and isinstance(key, ec.EllipticCurvePrivateKey):
        return _unwrap_ecdh(header, enc_key, key)
    rsa_pad: padding.AsymmetricPadding | None = None
    if alg == ALG_RSA_OAEP_256:
        rsa_pad = _OAEP
    elif alg == ALG_RSA1_5 and allow_rsa1_5:
        _warn_rsa1_5()
        rsa_pad = _PKCS1V15
    if rsa_pad is None or not isinstance(key, rsa.RSAPrivateKey):
        raise EvidenceError(
            f"JWE alg {alg[:32]!r} is not accepted for this TEE key", reason=JWE_UNSUPPORTED
        )
    try:
        return key.decrypt(enc_key, rsa_pad)
    except ValueError as exc:
        raise VerificationError("JWE key decryption failed", reason=JWE_DECRYPT) from exc


def decrypt_response(
    jwe: Mapping[str, Any],
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    *,
    insecure_allow_rsa1_5: bool = False,
) -> bytes:
    """Decrypt a flattened JWE made for ``private_key``; verifies the GCM tag.

    Raises ``EvidenceError`` (malformed/unsupported) or ``VerificationError("kbs.jwe_decrypt")``.
    """
    if not isinstance(jwe, Mapping):
        raise _malformed("must be a JSON object")
    values = [jwe.get(name) for name in _FIELDS]
    if not all(isinstance(v, str) for v in values):
        raise _malformed("protected/encrypted_key/iv/ciphertext/tag must be strings")
    protected, enc_key_b64, iv_b64, ct_b64, tag_b64 = (str(v) for v in values)
    header = _parse_header(protected, jwe)
    iv = b64url_decode(iv_b64, field="iv")
    tag = b64url_decode(tag_b64, field="tag")
    if len(iv) != IV_BYTES or len(tag) != TAG_BYTES:
        raise _malformed("iv must be 12 bytes and tag 16 bytes")
    # (1) AAD: the protected string; RFC 7516 appends "." + aad when an aad member exists.
    aad = protected.encode("ascii")
    if isinstance(jwe.get("aad"), str):
        aad += b"." + str(jwe["aad"]).encode("ascii", "replace")
    cek = _unwrap(
        header,
        b64url_decode(enc_key_b64, field="encrypted_key"),
        private_key,
        insecure_allow_rsa1_5,
    )
    if len(cek) != CEK_BYTES:
        raise VerificationError("JWE content key has the wrong length", reason=JWE_DECRYPT)
    try:
        return AESGCM(cek).decrypt(iv, b64url_decode(ct_b64, field="ciphertext") + tag, aad)
    except InvalidTag as exc:
        raise VerificationError("JWE authentication tag mismatch", reason=JWE_DECRYPT) from exc
