"""trustpod's ``envelope`` sealed secrets with provider ``kbs`` (pure; our extension).

Upstream's envelope secrets wrap the data key with a cloud KMS (``aliyun``/``aws``/``ehsm``) and
have no ``kbs`` provider (guest-and-control-plane.md §3.3). trustpod adds one, keeping upstream's
payload members unchanged (docs/compat.md, ADR 0701):

* ``key_id``: ``kbs:///<repo>/<type>/<tag>``, a KBS resource holding the 32-byte key-encryption key
  (KEK), raw bytes (or their standard base64, 44 characters).
* ``encrypted_key``: the random 32-byte data key wrapped with the KEK by AES key wrap (RFC 3394,
  ``A256KW``: 40 bytes), recorded as ``provider_settings.key_wrap = "A256KW"``.
* ``wrap_type``: ``A256GCM``; ``iv``: 12 bytes; ``encrypted_data`` = ciphertext || 16-byte tag, no
  AAD, exactly upstream's A256GCM envelope data layout.

The KEK never leaves the KBS except JWE-encrypted to an attested TEE key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from trustpod._internal.b64 import b64_decode
from trustpod.errors import EvidenceError, VerificationError
from trustpod.sealed.payload import EnvelopeSecret
from trustpod.sealed.resource_uri import ResourceUri

__all__ = [
    "IV_BYTES",
    "KEK_BYTES",
    "KEY_WRAP",
    "PROVIDER",
    "WRAP_TYPE",
    "kek_from_resource",
    "open_envelope",
    "seal_envelope",
]

PROVIDER = "kbs"
WRAP_TYPE = "A256GCM"
KEY_WRAP = "A256KW"
KEK_BYTES = 32
DEK_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
_WRAPPED_BYTES = DEK_BYTES + 8
_B64_KEK_CHARS = 44


def kek_from_resource(value: bytes) -> bytes:
    """The KEK from a KBS resource value: 32 raw bytes, or their standard base64."""
    if len(value) == KEK_BYTES:
        return value
    text = value.strip()
    if len(text) == _B64_KEK_CHARS:
        try:
            raw = b64_decode(text.decode("ascii"), field="envelope key")
        except (UnicodeDecodeError, EvidenceError):
            raw = b""
        if len(raw) == KEK_BYTES:
            return raw
    raise EvidenceError(
        f"envelope key-encryption key must be {KEK_BYTES} bytes (raw or base64)",
        reason="sealed.envelope_kek",
        fix="upload a 32-byte AES key: head -c32 /dev/urandom > kek.bin",
    )


def seal_envelope(
    plaintext: bytes,
    kek: bytes,
    key_uri: str,
    *,
    annotations: Mapping[str, Any] | None = None,
) -> EnvelopeSecret:
    """Encrypt ``plaintext`` under a fresh data key wrapped by ``kek`` (held at ``key_uri``)."""
    ResourceUri.parse(key_uri)
    kek = kek_from_resource(kek)
    dek, iv = os.urandom(DEK_BYTES), os.urandom(IV_BYTES)
    return EnvelopeSecret(
        key_id=key_uri,
        encrypted_key=aes_key_wrap(kek, dek),
        encrypted_data=AESGCM(dek).encrypt(iv, plaintext, None),
        wrap_type=WRAP_TYPE,
        iv=iv,
        provider=PROVIDER,
        provider_settings={"key_wrap": KEY_WRAP},
        annotations=dict(annotations or {}),
    )


def open_envelope(secret: EnvelopeSecret, kek: bytes) -> bytes:
    """Unwrap the data key with ``kek`` and decrypt (fails closed on any mismatch)."""
    # (1) only our provider / algorithms
    if secret.provider != PROVIDER:
        raise EvidenceError(
            f"envelope provider {secret.provider!r} is not supported (only 'kbs')",
            reason="sealed.envelope_provider",
        )
    key_wrap = secret.provider_settings.get("key_wrap", KEY_WRAP)
    if key_wrap != KEY_WRAP or secret.wrap_type != WRAP_TYPE:
        raise EvidenceError(
            f"envelope must use key_wrap {KEY_WRAP} and wrap_type {WRAP_TYPE}",
            reason="sealed.envelope_alg",
        )
    # (2) exact sizes
    if len(secret.iv) != IV_BYTES or len(secret.encrypted_key) != _WRAPPED_BYTES:
        raise EvidenceError("envelope iv/encrypted_key have wrong sizes", reason="sealed.envelope")
    if len(secret.encrypted_data) < TAG_BYTES:
        raise EvidenceError("envelope data is shorter than its tag", reason="sealed.envelope")
    # (3) unwrap, then AES-256-GCM (ciphertext || tag, no AAD)
    try:
        dek = aes_key_unwrap(kek_from_resource(kek), secret.encrypted_key)
        return AESGCM(dek).decrypt(secret.iv, secret.encrypted_data, None)
    except (InvalidUnwrap, InvalidTag) as exc:
        raise VerificationError(
            f"envelope secret does not decrypt with the key at {secret.key_id}",
            reason="sealed.envelope_decrypt",
        ) from exc
