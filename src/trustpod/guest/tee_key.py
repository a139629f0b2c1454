"""The guest's ephemeral TEE key pair (gc ``kbs_protocol/src/keypair.rs``).

Its public JWK goes into ``runtime-data.tee-pubkey``; the KBS wraps each resource's content key
for it (trustee-protocol.md §1.7). Default: EC P-256 with ``ECDH-ES+A256KW`` (as guest-components);
RSA with ``RSA-OAEP-256`` (2048/3072/4096 bits) is optional. PEM files are what upstream's AA hands
to CDH and what ``kbs-client --tee-key-file`` reads: PKCS#8 for EC, PKCS#1 for RSA.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from trustpod.errors import ConfigError, EvidenceError
from trustpod.protocol.jwe import MIN_RSA_BITS, decrypt_response
from trustpod.protocol.tee_pubkey import EC_ALG, RSA_ALG, TeePubKey

__all__ = ["ALLOWED_RSA_BITS", "TeeKeyPair"]

#: RSA sizes ``generate_rsa`` accepts (upstream uses 2048).
ALLOWED_RSA_BITS = (2048, 3072, 4096)
_CURVES: Mapping[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-521": ec.SECP521R1()}

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class TeeKeyPair:
    """A private key plus its cached public JWK; decrypts the KBS's resource JWEs."""

    __slots__ = ("_private", "_pubkey")

    def __init__(self, private_key: PrivateKey, *, alg: str | None = None) -> None:
        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            if private_key.curve.name not in ("secp256r1", "secp521r1"):
                raise ConfigError(
                    f"TEE key curve {private_key.curve.name} is not supported (P-256, P-521)",
                    reason="guest.tee_key",
                )
        elif isinstance(private_key, rsa.RSAPrivateKey):
            if private_key.key_size < MIN_RSA_BITS:
                raise ConfigError(
                    f"TEE RSA key has {private_key.key_size} bits; need >= {MIN_RSA_BITS}",
                    reason="guest.tee_key",
                )
        else:
            raise ConfigError("TEE key must be an EC or RSA private key", reason="guest.tee_key")
        self._private = private_key
        self._pubkey = TeePubKey.from_public_key(private_key.public_key(), alg)

    @classmethod
    def generate_ec(cls, curve: str = "P-256") -> TeeKeyPair:
        """A fresh EC key (``ECDH-ES+A256KW``); the default TEE key."""
        if curve not in _CURVES:
            raise ConfigError(f"unsupported TEE key curve {curve!r}", reason="guest.tee_key")
        return cls(ec.generate_private_key(_CURVES[curve]), alg=EC_ALG)

    @classmethod
    def generate_rsa(cls, bits: int = 2048) -> TeeKeyPair:
        """A fresh RSA key (``RSA-OAEP-256``)."""
        if bits not in ALLOWED_RSA_BITS:
            raise ConfigError(f"unsupported RSA key size {bits}", reason="guest.tee_key")
        return cls(rsa.generate_private_key(65537, bits), alg=RSA_ALG)

    @classmethod
    def from_pem(cls, data: bytes) -> TeeKeyPair:
        """Load an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise EvidenceError(
                "TEE key file is not an unencrypted PEM private key", reason="guest.tee_key_pem"
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ConfigError("TEE key must be an EC or RSA private key", reason="guest.tee_key")
        return cls(key)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TeeKeyPair:
        """Read a PEM key file (``kbs-client --tee-key-file``)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read TEE key file {path}: {exc.strerror}") from exc
        return cls.from_pem(data)

    def to_pem(self) -> bytes:
        """PEM as upstream's AA hands it to CDH: PKCS#8 for EC, PKCS#1 for RSA."""
        fmt = (
            serialization.PrivateFormat.TraditionalOpenSSL
            if isinstance(self._private, rsa.RSAPrivateKey)
            else serialization.PrivateFormat.PKCS8
        )
        return self._private.private_bytes(
            serialization.Encoding.PEM, fmt, serialization.NoEncryption()
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the PEM with mode 0600, atomically replacing an existing file."""
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.to_pem())
        tmp.replace(target)

    @property
    def private_key(self) -> PrivateKey:
        return self._private

    @property
    def tee_pubkey(self) -> TeePubKey:
        return self._pubkey

    def public_jwk(self) -> dict[str, str]:
        """The JWK sent as ``runtime-data.tee-pubkey``."""
        return self._pubkey.to_json()

    def decrypt(self, jwe: Mapping[str, Any]) -> bytes:
        """Decrypt a KBS resource response (flattened JWE) made for this key."""
        return decrypt_response(jwe, self._private)
