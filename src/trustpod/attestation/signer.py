"""The attestation-token signing key (ES256, EC P-256) and JWS signing.

Key source, in order:
* ``signer_key_path`` (PEM, EC P-256 only, else ``ConfigError``), with an optional PEM chain
  (``signer_cert_path`` -> header ``jwk.x5c``) and ``signer_cert_url`` (-> ``jwk.x5u``);
* otherwise a key generated ONCE and persisted in storage namespace ``trustpod_keys``, written
  with ``overwrite=False`` and read back, so replicas racing at startup agree on one key (upstream
  uses an ephemeral per-process key; see docs/compat.md).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from trustpod._internal.b64 import b64_encode, b64url_encode
from trustpod.errors import ConfigError, DependencyError
from trustpod.storage.port import KeyValueStore

__all__ = ["KEY_NAME", "KEY_NAMESPACE", "TokenSigner"]

_log = logging.getLogger(__name__)
KEY_NAMESPACE = "trustpod_keys"
KEY_NAME = "as-token-signer.pem"


def _p256(key: Any, where: str) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(
            f"{where}: the token signer key must be EC P-256 (ES256)", reason="config.signer_key"
        )
    return key


def _load_key(pem: bytes, where: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{where}: not a PEM private key: {exc}", reason="config.signer_key"
        ) from exc
    return _p256(key, where)


class TokenSigner:
    """Signs compact JWS with ES256 and publishes the matching JWK."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        chain: list[x509.Certificate] | None = None,
        cert_url: str | None = None,
    ) -> None:
        self._key = _p256(key, "token signer")
        self._chain = list(chain or [])
        if self._chain and self._chain[0].public_key() != key.public_key():
            raise ConfigError(
                "the token signer certificate does not match the signer key",
                reason="config.signer_cert",
            )
        nums = key.public_key().public_numbers()
        jwk: dict[str, Any] = {
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "x": b64url_encode(nums.x.to_bytes(32, "big")),
            "y": b64url_encode(nums.y.to_bytes(32, "big")),
        }
        if self._chain:
            jwk["x5c"] = [
                b64_encode(c.public_bytes(serialization.Encoding.DER)) for c in self._chain
            ]
        if cert_url:
            jwk["x5u"] = cert_url
        self._jwk = jwk
        header = {"typ": "JWT", "alg": "ES256", "jwk": jwk}
        self._header_b64 = b64url_encode(json.dumps(header, separators=(",", ":")).encode())

    @classmethod
    def from_files(
        cls, key_path: str | Path, cert_path: str | Path | None = None, cert_url: str | None = None
    ) -> TokenSigner:
        try:
            pem = Path(key_path).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the token signer key {key_path}: {exc}", reason="config.signer_key"
            ) from exc
        chain: list[x509.Certificate] = []
        if cert_path is not None:
            try:
                chain = x509.load_pem_x509_certificates(Path(cert_path).read_bytes())
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"cannot read the token signer chain {cert_path}: {exc}",
                    reason="config.signer_cert",
                ) from exc
        return cls(_load_key(pem, str(key_path)), chain, cert_url)

    @classmethod
    def persistent(cls, store: KeyValueStore) -> TokenSigner:
        """The key in ``trustpod_keys``, created once (insert-if-absent, then re-read)."""
        raw = store.get(KEY_NAMESPACE, KEY_NAME)
        if raw is None:
            fresh = ec.generate_private_key(ec.SECP256R1())
            pem = fresh.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            if store.put(KEY_NAMESPACE, KEY_NAME, pem, overwrite=False):
                _log.info(
                    "generated the attestation token signing key (stored in %s)", KEY_NAMESPACE
                )
            raw = store.get(KEY_NAMESPACE, KEY_NAME)
            if raw is None:
                raise DependencyError(
                    "the token signing key vanished from storage", reason="storage.signer_key"
                )
        return cls(_load_key(raw, f"storage {KEY_NAMESPACE}/{KEY_NAME}"))

    def public_jwk(self) -> dict[str, Any]:
        """The header/JWKS JWK (``kty, crv, alg, x, y[, x5c][, x5u]``)."""
        return dict(self._jwk)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk()]}

    def sign(self, claims: dict[str, Any]) -> str:
        """Compact JWS ``header.claims.signature`` (ES256, raw r||s)."""
        payload = b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{self._header_b64}.{payload}".encode("ascii")
        der = self._key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        sig = b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        return f"{self._header_b64}.{payload}.{sig}"
