"""ocicrypt's ``jwe`` recipient scheme (``keywrap/jwe``, go-jose ``FullSerialize``) — pure.

``org.opencontainers.image.enc.keys.jwe`` = base64 of a JWE JSON serialization whose plaintext
is the layer's private options. Go ocicrypt encrypts with ``enc = A256GCM`` and, for RSA
recipients, ``alg = RSA-OAEP`` (SHA-1 OAEP, go-jose's ``RSA_OAEP``) in the protected header;
one recipient gives the flattened form (``encrypted_key`` at top level), several the general
form (``recipients``). Content AAD = ASCII of ``protected`` (RFC 7516 §5.1 step 14). Decryption
also accepts ``RSA-OAEP-256``; EC recipients (``ECDH-ES+A256KW``) are not implemented.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustpod._internal.b64 import b64url_decode, b64url_encode
from trustpod.errors import EvidenceError, VerificationError

__all__ = ["MIN_RSA_BITS", "jwe_decrypt", "jwe_encrypt"]

MIN_RSA_BITS = 2048
_MAX_JWE_CHARS = 256 * 1024
_OAEP = {
    # RSA-OAEP is SHA-1 OAEP by definition (RFC 7518 §4.3); go-jose/ocicrypt use it for RSA keys
    "RSA-OAEP": padding.OAEP(
        mgf=padding.MGF1(hashes.SHA1()),  # noqa: S303
        algorithm=hashes.SHA1(),  # noqa: S303
        label=None,
    ),
    "RSA-OAEP-256": padding.OAEP(
        mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    ),
}


def _bad(what: str) -> EvidenceError:
    return EvidenceError(f"JWE layer key: {what}", reason="image.decrypt_format")


def _u(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise _bad(f"{what} missing")
    return b64url_decode(value, field=f"JWE {what}")


def jwe_encrypt(plaintext: bytes, recipients: Sequence[rsa.RSAPublicKey]) -> bytes:
    """Wrap ``plaintext`` for RSA recipients as Go ocicrypt does (RSA-OAEP, A256GCM)."""
    if not recipients:
        raise ValueError("no JWE recipients")
    for key in recipients:
        if key.key_size < MIN_RSA_BITS:
            raise _bad(f"RSA recipient key is {key.key_size} bits (minimum {MIN_RSA_BITS})")
    protected = b64url_encode(json.dumps({"alg": "RSA-OAEP", "enc": "A256GCM"}).encode())
    cek, iv = os.urandom(32), os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode())
    keys = [b64url_encode(k.encrypt(cek, _OAEP["RSA-OAEP"])) for k in recipients]
    doc: dict[str, Any] = {"protected": protected}
    if len(keys) == 1:
        doc["encrypted_key"] = keys[0]
    else:
        doc["recipients"] = [{"encrypted_key": k} for k in keys]
    doc.update(
        iv=b64url_encode(iv),
        ciphertext=b64url_encode(sealed[:-16]),
        tag=b64url_encode(sealed[-16:]),
    )
    return json.dumps(doc, separators=(",", ":")).encode()


def jwe_decrypt(blob: bytes, private_keys: Sequence[rsa.RSAPrivateKey]) -> bytes:
    """The plaintext, with the first private key that opens a recipient; else raises."""
    if len(blob) > _MAX_JWE_CHARS:
        raise _bad("too long")
    try:
        doc = json.loads(blob)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise _bad("not a JSON object")
    protected = doc.get("protected")
    if not isinstance(protected, str):
        raise _bad("protected header missing")
    try:
        header = json.loads(_u(protected, "protected"))
    except ValueError as exc:
        raise _bad("protected header is not JSON") from exc
    if not isinstance(header, dict) or header.get("enc") != "A256GCM":
        raise _bad("enc must be A256GCM")
    if "zip" in header or "crit" in header:
        raise _bad("zip and crit headers are not supported")
    if "aad" in doc:
        raise _bad("an aad member is not supported")
    entries: list[tuple[dict[str, Any], object]] = []
    if "recipients" in doc:
        recips = doc["recipients"]
        if not isinstance(recips, list) or not 0 < len(recips) <= 64:
            raise _bad("recipients must be a non-empty list")
        for r in recips:
            if not isinstance(r, dict):
                raise _bad("recipient is not an object")
            hdr = r.get("header") or {}
            if not isinstance(hdr, dict):
                raise _bad("recipient header is not an object")
            entries.append(({**hdr, **header}, r.get("encrypted_key")))
    else:
        entries.append((header, doc.get("encrypted_key")))
    iv, ct = _u(doc.get("iv"), "iv"), _u(doc.get("ciphertext"), "ciphertext")
    tag = _u(doc.get("tag"), "tag")
    for hdr, ek_text in entries:
        pad = _OAEP.get(str(hdr.get("alg")))
        if pad is None:
            continue
        ek = _u(ek_text, "encrypted_key")
        for key in private_keys:
            try:
                cek = key.decrypt(ek, pad)
            except ValueError:
                continue
            if len(cek) != 32:
                continue
            try:
                return AESGCM(cek).decrypt(iv, ct + tag, protected.encode())
            except InvalidTag:
                raise VerificationError(
                    "JWE layer key does not decrypt (tampered)", reason="image.decrypt_key"
                ) from None
    raise VerificationError(
        "no configured private key opens this layer's JWE recipients (wrong key)",
        reason="image.decrypt_key",
    )
