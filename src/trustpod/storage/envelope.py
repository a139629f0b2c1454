"""At-rest envelope format (ADR 0302): AES-256-GCM under a per-value data key, the data key
wrapped by a key-encryption key (KEK) kept outside the database.

Pure: bytes in, bytes out; the KEK is reached through the ``KekProvider`` port (a local key
here, a KMS such as Vault transit or Azure Key Vault ``wrapKey`` through the same Protocol).

Layout of an encrypted value (all lengths checked exactly when parsed)::

    offset  size  field
    0       4     magic  b"TPAR"
    4       1     version (1)
    5       1     n = len(kek_id)        1..255
    6       n     kek_id (ASCII)          which KEK wrapped the data key
    6+n     2     m = len(wrapped_dek)    big endian, 1..4096
    8+n     m     wrapped_dek             opaque to this module (the provider's format)
    8+n+m   12    nonce
    20+n+m  >=16  ciphertext || GCM tag

The additional authenticated data binds the value to where it is stored:
``b"trustpod-at-rest-v1\\0" + namespace + b"\\0" + key``, for both the data and the wrapped key,
so a value copied to another resource path (or namespace) does not decrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustpod.errors import ConfigError, VerificationError

__all__ = [
    "KEK_BYTES",
    "MAGIC",
    "Envelope",
    "KekProvider",
    "LocalKek",
    "aad_for",
    "is_envelope",
    "open_envelope",
    "open_value",
    "seal_value",
]

MAGIC = b"TPAR"
VERSION = 1
KEK_BYTES = 32
_NONCE = 12
_TAG = 16
_MAX_WRAPPED = 4096
_AAD_PREFIX = b"trustpod-at-rest-v1\x00"


@runtime_checkable
class KekProvider(Protocol):
    """Port: wraps and unwraps 32-byte data keys. ``key_id`` names the KEK (stored in each
    envelope so a store opened with another KEK is recognised before any decryption)."""

    @property
    def key_id(self) -> str: ...

    def wrap(self, dek: bytes, aad: bytes) -> bytes:
        """The data key encrypted under the KEK, bound to ``aad``."""
        ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """The data key; raises ``VerificationError`` when ``wrapped`` or ``aad`` were altered
        or another KEK wrapped it."""
        ...


class LocalKek:
    """A KEK held in this process (read from a 0600 file or an environment variable): the data
    key is wrapped with AES-256-GCM (``nonce || ciphertext || tag``)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEK_BYTES:
            raise ConfigError(
                f"the at-rest key must be {KEK_BYTES} bytes, got {len(key)}",
                reason="storage.at_rest.key_size",
                fix="generate one with `trustpod kbs init` or "
                "`head -c 32 /dev/urandom > kek && chmod 600 kek`",
            )
        self._aead = AESGCM(key)
        digest = hmac.new(key, b"trustpod at-rest key id", hashlib.sha256).hexdigest()
        self._id = "local:" + digest[:16]

    @property
    def key_id(self) -> str:
        return self._id

    def wrap(self, dek: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, dek, b"dek\x00" + aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        if len(wrapped) < _NONCE + _TAG:
            raise VerificationError("wrapped data key too short", reason="storage.at_rest.format")
        try:
            return self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], b"dek\x00" + aad)
        except InvalidTag as exc:
            raise VerificationError(
                "the data key does not unwrap (wrong key or altered value)",
                reason="storage.at_rest.unwrap",
            ) from exc


@dataclass(frozen=True, slots=True)
class Envelope:
    kek_id: str
    wrapped_dek: bytes
    nonce: bytes
    ciphertext: bytes  # includes the 16-byte GCM tag

    def to_bytes(self) -> bytes:
        kid = self.kek_id.encode("ascii")
        return b"".join(
            (
                MAGIC,
                bytes((VERSION, len(kid))),
                kid,
                struct.pack(">H", len(self.wrapped_dek)),
                self.wrapped_dek,
                self.nonce,
                self.ciphertext,
            )
        )

    @classmethod
    def parse(cls, raw: bytes) -> Envelope:
        def bad(what: str) -> VerificationError:
            return VerificationError(
                f"stored value is not a valid at-rest envelope: {what}",
                reason="storage.at_rest.format",
            )

        if raw[:4] != MAGIC:
            raise bad("magic")
        if len(raw) < 6 or raw[4] != VERSION:
            raise bad("version")
        n = raw[5]
        if n == 0 or len(raw) < 8 + n:
            raise bad("kek id")
        kek_id = raw[6 : 6 + n].decode("ascii", errors="replace")
        (m,) = struct.unpack(">H", raw[6 + n : 8 + n])
        if m == 0 or m > _MAX_WRAPPED:
            raise bad("wrapped key length")
        start = 8 + n + m
        if len(raw) < start + _NONCE + _TAG:
            raise bad("truncated")
        return cls(kek_id, raw[8 + n : start], raw[start : start + _NONCE], raw[start + _NONCE :])


def aad_for(namespace: str, key: str) -> bytes:
    """The additional authenticated data binding a value to its namespace and key."""
    return _AAD_PREFIX + namespace.encode() + b"\x00" + key.encode()


def is_envelope(raw: bytes) -> bool:
    return raw[:5] == MAGIC + bytes((VERSION,))


def seal_value(kek: KekProvider, namespace: str, key: str, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` for storage at ``namespace``/``key``."""
    aad = aad_for(namespace, key)
    dek = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(_NONCE)
    ct = AESGCM(dek).encrypt(nonce, plaintext, aad)
    return Envelope(kek.key_id, kek.wrap(dek, aad), nonce, ct).to_bytes()


def open_value(kek: KekProvider, namespace: str, key: str, raw: bytes) -> bytes:
    """Decrypt a stored value.

    Raises ``VerificationError`` (reason ``storage.at_rest.*``) for another KEK, a value moved
    to another key, or any altered byte.
    """
    return open_envelope(kek, namespace, key, Envelope.parse(raw))


def open_envelope(
    kek: KekProvider, namespace: str, key: str, env: Envelope, *, dek: bytes | None = None
) -> bytes:
    """``open_value`` of an already parsed envelope; ``dek`` skips the unwrap (a cached data
    key)."""
    if env.kek_id != kek.key_id:
        raise VerificationError(
            f"value encrypted under KEK {env.kek_id!r}, this KBS has {kek.key_id!r}",
            reason="storage.at_rest.wrong_key",
        )
    aad = aad_for(namespace, key)
    data_key = dek if dek is not None else kek.unwrap(env.wrapped_dek, aad)
    try:
        return AESGCM(data_key).decrypt(env.nonce, env.ciphertext, aad)
    except InvalidTag as exc:
        raise VerificationError(
            f"stored value {namespace}/{key[:128]} does not decrypt (altered or moved)",
            reason="storage.at_rest.integrity",
        ) from exc
