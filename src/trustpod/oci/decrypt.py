"""Decrypting encrypted layers for the puller (§3.4 of pods-images-gpu.md) — I/O at the edge.

``LayerKeys.unwrap(desc)`` finds the layer key: for each ``provider.attestation-agent`` packet,
the KEK is the KBS resource named by its ``kid``, fetched through the ``KeySource`` port (the
guest: the attested CDH; the host: a key directory); then ``jwe`` recipients with the
configured RSA private keys (in the guest also KBS resources). A denial by the KBS resource
policy is a ``PolicyDenied`` naming the key. The puller reads each cached ciphertext twice
through one open file: ``verify_layer_hmac`` first (the whole HMAC, compared in constant time),
then ``DecryptingReader`` streams the plaintext into the unpacker — so not one byte of a tampered
or wrongly keyed layer is unpacked, and no plaintext copy is kept in memory or on disk.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from trustpod.errors import (
    ConfigError,
    EvidenceError,
    NotFoundError,
    PolicyDenied,
    TrustpodError,
    VerificationError,
)
from trustpod.oci.manifest import Descriptor
from trustpod.oci.ocicrypt import (
    ANNOTATION_JWE,
    ANNOTATION_PROVIDER_AA,
    ANNOTATION_PUBOPTS,
    LayerDecrypter,
    PrivateOptions,
    PublicOptions,
    parse_packet,
    parse_private_options,
    parse_public_options,
    split_recipients,
    unwrap_packet,
)
from trustpod.oci.ocicrypt_jwe import jwe_decrypt

__all__ = [
    "DecryptingReader",
    "KeySource",
    "LayerKeys",
    "decrypt_blob",
    "load_rsa_private_key",
    "verify_layer_hmac",
]

log = logging.getLogger(__name__)


class KeySource(Protocol):
    """A KBS resource by URI (``ConfidentialDataHub.get_resource`` implements it)."""

    def get_resource(self, uri: str) -> bytes: ...


def load_rsa_private_key(pem: bytes, what: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{what} is not a PEM private key ({exc})", reason="image.jwe_key"
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{what} is not an RSA private key", reason="image.jwe_key")
    return key


@dataclass
class LayerKeys:
    """How one puller obtains layer keys (KEKs by ``kid``; JWE private keys)."""

    kbs: KeySource | None = None
    jwe_keys: Sequence[rsa.RSAPrivateKey] = ()
    #: PEM private keys loaded on the first JWE layer (``kbs://`` through ``load``).
    jwe_key_uris: Sequence[str] = ()
    load: Callable[[str], bytes] | None = None
    _keks: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    _loaded: list[rsa.RSAPrivateKey] | None = field(default=None, init=False, repr=False)

    def _jwe(self, layer: str) -> list[rsa.RSAPrivateKey]:
        if self._loaded is None:
            keys = list(self.jwe_keys)
            for uri in self.jwe_key_uris:
                if self.load is None:
                    raise ConfigError(f"cannot load {uri}: no loader", reason="image.jwe_key")
                try:
                    pem = self.load(uri)
                except PolicyDenied as exc:
                    raise PolicyDenied(
                        f"the KBS denied the image key {uri} (layer {layer}): {exc}",
                        reason="image.key_denied",
                        fix="the KBS resource policy must release this key to this pod",
                    ) from exc
                keys.append(load_rsa_private_key(pem, uri))
            self._loaded = keys
        return self._loaded

    def _kek(self, kid: str, layer: str) -> bytes:
        if kid in self._keks:
            return self._keks[kid]
        if self.kbs is None:
            raise ConfigError(
                f"layer {layer} needs the key {kid} but no key source is configured",
                reason="image.decrypt_no_key",
            )
        try:
            kek = self.kbs.get_resource(kid)
        except PolicyDenied as exc:
            raise PolicyDenied(
                f"the KBS denied the image key {kid} (layer {layer}): {exc}",
                reason="image.key_denied",
                fix="the KBS resource policy must release this key to this pod's attestation",
            ) from exc
        except NotFoundError as exc:
            raise NotFoundError(
                f"the image key {kid} (layer {layer}) does not exist: {exc}",
                reason="image.key_missing",
            ) from exc
        self._keks[kid] = kek
        return kek

    def unwrap(self, desc: Descriptor) -> tuple[PrivateOptions, PublicOptions]:
        """The layer key and public options of an encrypted descriptor, or raises."""
        pub = parse_public_options(desc.annotation(ANNOTATION_PUBOPTS))
        packets = split_recipients(desc.annotation(ANNOTATION_PROVIDER_AA), "provider annotation")
        jwes = split_recipients(desc.annotation(ANNOTATION_JWE), "jwe annotation")
        if not packets and not jwes:
            raise EvidenceError(
                f"encrypted layer {desc.digest} has no attestation-agent or jwe recipient",
                reason="image.decrypt_no_key",
            )
        errors: list[TrustpodError] = []
        for raw in packets:
            packet = parse_packet(raw)
            try:
                return unwrap_packet(packet, self._kek(packet.kid, desc.digest)), pub
            except (PolicyDenied, NotFoundError, VerificationError, ConfigError) as exc:
                errors.append(exc)
        if jwes and (self.jwe_keys or self.jwe_key_uris):
            for raw in jwes:
                try:
                    return parse_private_options(jwe_decrypt(raw, self._jwe(desc.digest))), pub
                except VerificationError as exc:
                    errors.append(exc)
        elif jwes:
            errors.append(
                ConfigError(
                    f"layer {desc.digest} has JWE recipients but no JWE private key is configured",
                    reason="image.decrypt_no_key",
                )
            )
        # a denial is the most useful message (it names the key); then the first failure
        denied = [e for e in errors if isinstance(e, PolicyDenied)]
        raise (denied or errors)[0]


class DecryptingReader:
    """``read(n)``: AES-256-CTR plaintext of an already HMAC-verified ciphertext stream."""

    def __init__(self, f: IO[bytes], opts: PrivateOptions) -> None:
        self._f = f
        self._ctx = Cipher(algorithms.AES(opts.symkey), modes.CTR(opts.nonce)).decryptor()

    def read(self, n: int = -1) -> bytes:
        return self._ctx.update(self._f.read(n))


def verify_layer_hmac(
    f: IO[bytes], opts: PrivateOptions, pub: PublicOptions, chunk: int = 1 << 20
) -> None:
    """Pass 1 over the ciphertext: HMAC-SHA256 with the layer key must equal ``pubopts.hmac``
    (``VerificationError`` ``image.decrypt_hmac`` otherwise). Then rewind ``f``."""
    mac = hmac.new(opts.symkey, digestmod="sha256")
    while data := f.read(chunk):
        mac.update(data)
    if not hmac.compare_digest(mac.digest(), pub.hmac):
        raise VerificationError(
            "encrypted layer HMAC mismatch (tampered ciphertext or wrong layer key)",
            reason="image.decrypt_hmac",
        )
    f.seek(0)


def decrypt_blob(
    src: Path, dest: Path, opts: PrivateOptions, pub: PublicOptions, chunk: int = 1 << 20
) -> Path:
    """Decrypt ``src`` into ``dest`` (0600) for tools; HMAC checked at the end, ``dest``
    removed on failure. Nothing may read ``dest`` before this returns."""
    dec = LayerDecrypter(opts, pub)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as f:
            while data := f.read(chunk):
                out.write(dec.update(data))
            out.write(dec.finish())
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest
