"""ocicrypt's encrypted-layer format and CoCo's annotation packet — pure (pods-images-gpu.md §3).

Layer (§3.1, Go ``containers/ocicrypt`` ``blockcipher``, ocicrypt-rs ``blockcipher/aes_ctr.rs``):

* media type = the plain layer type + ``+encrypted``; the descriptor's digest/size are of the
  ciphertext;
* ``org.opencontainers.image.enc.pubopts`` = base64 of
  ``{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"<b64 32>","cipheroptions":{}}``;
* the private options ``{"symkey":"<b64 32>","cipheroptions":{"nonce":"<b64 16>"},
  "digest":"sha256:<plain blob>"}`` are what each recipient scheme wraps;
* cipher: AES-256-CTR (the 16-byte nonce is the initial 128-bit big-endian counter block),
  HMAC-SHA256 keyed with the same symkey over the ciphertext.

Recipient schemes: ``org.opencontainers.image.enc.keys.<scheme>`` = comma-separated base64
blobs; ``provider.attestation-agent`` blobs are CoCo ``AnnotationPacket`` JSON (§3.3,
``coco_keyprovider``): ``wrapped_data = AES-256-GCM(KEK, iv).encrypt(private options)``, the KEK
being the KBS resource named by ``kid``. ``jwe`` is in ``trustpod.oci.ocicrypt_jwe``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustpod.errors import ConfigError, EvidenceError, VerificationError

__all__ = [
    "ANNOTATION_JWE",
    "ANNOTATION_PROVIDER_AA",
    "ANNOTATION_PUBOPTS",
    "CIPHER",
    "ENCRYPTED_SUFFIX",
    "MAX_ANNOTATION_CHARS",
    "MAX_RECIPIENTS",
    "AnnotationPacket",
    "LayerDecrypter",
    "LayerEncrypter",
    "PrivateOptions",
    "PublicOptions",
    "b64d",
    "base_media_type",
    "is_encrypted",
    "new_private_options",
    "normalize_kid",
    "parse_packet",
    "parse_private_options",
    "parse_public_options",
    "split_recipients",
    "unwrap_packet",
    "wrap_packet",
]

ENCRYPTED_SUFFIX = "+encrypted"
ANNOTATION_PUBOPTS = "org.opencontainers.image.enc.pubopts"
ANNOTATION_PROVIDER_AA = "org.opencontainers.image.enc.keys.provider.attestation-agent"
ANNOTATION_JWE = "org.opencontainers.image.enc.keys.jwe"
CIPHER = "AES_256_CTR_HMAC_SHA256"
WRAP_A256GCM = "A256GCM"
#: Bounds on what a manifest may carry (one annotation value; recipients per scheme).
MAX_ANNOTATION_CHARS = 256 * 1024
MAX_RECIPIENTS = 64
_KEY_BYTES = 32
_NONCE_BYTES = 16
_GCM_IV_BYTES = 12


def _bad(what: str) -> EvidenceError:
    return EvidenceError(f"encrypted layer: {what}", reason="image.decrypt_format")


def b64d(value: object, what: str) -> bytes:
    """Standard base64 (padding required, as Go's ``[]byte`` JSON and ocicrypt-rs emit)."""
    if not isinstance(value, str):
        raise _bad(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad(f"{what} is not base64 ({exc})") from exc


def _b64e(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _json_obj(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"{what} is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise _bad(f"{what} is not a JSON object")
    return doc


def is_encrypted(media_type: str) -> bool:
    return media_type.endswith(ENCRYPTED_SUFFIX)


def base_media_type(media_type: str) -> str:
    """``…tar+gzip+encrypted`` → ``…tar+gzip``."""
    return media_type[: -len(ENCRYPTED_SUFFIX)] if is_encrypted(media_type) else media_type


def split_recipients(value: str | None, what: str) -> list[bytes]:
    """An ``enc.keys.*`` annotation → its decoded recipient blobs."""
    if not value:
        return []
    if len(value) > MAX_ANNOTATION_CHARS:
        raise _bad(f"{what} is longer than {MAX_ANNOTATION_CHARS} characters")
    parts = value.split(",")
    if len(parts) > MAX_RECIPIENTS:
        raise _bad(f"{what} has more than {MAX_RECIPIENTS} recipients")
    return [b64d(p, what) for p in parts]


@dataclass(frozen=True, slots=True)
class PublicOptions:
    cipher: str
    hmac: bytes

    def to_annotation(self) -> str:
        doc = {"cipher": self.cipher, "hmac": _b64e(self.hmac), "cipheroptions": {}}
        return _b64e(json.dumps(doc, separators=(",", ":")).encode())


def parse_public_options(annotation: str | None) -> PublicOptions:
    """``enc.pubopts`` (base64 JSON); only ``AES_256_CTR_HMAC_SHA256`` is accepted."""
    if not annotation:
        raise _bad(f"no {ANNOTATION_PUBOPTS} annotation (the HMAC cannot be checked)")
    if len(annotation) > MAX_ANNOTATION_CHARS:
        raise _bad("pubopts too long")
    doc = _json_obj(b64d(annotation, "pubopts"), "pubopts")
    cipher = doc.get("cipher")
    if cipher != CIPHER:
        raise _bad(f"cipher {cipher!r} is not supported (only {CIPHER})")
    mac = b64d(doc.get("hmac"), "pubopts.hmac")
    if len(mac) != 32:
        raise _bad("pubopts.hmac is not 32 bytes")
    opts = doc.get("cipheroptions", {})
    if opts is not None and not isinstance(opts, dict):
        raise _bad("pubopts.cipheroptions is not an object")
    return PublicOptions(cipher, mac)


@dataclass(frozen=True, slots=True)
class PrivateOptions:
    symkey: bytes
    nonce: bytes
    digest: str

    def to_json(self) -> bytes:
        doc = {
            "symkey": _b64e(self.symkey),
            "cipheroptions": {"nonce": _b64e(self.nonce)},
            "digest": self.digest,
        }
        return json.dumps(doc, separators=(",", ":")).encode()


def new_private_options(digest: str) -> PrivateOptions:
    """A fresh random layer key and nonce (one per layer, as ocicrypt does)."""
    return PrivateOptions(os.urandom(_KEY_BYTES), os.urandom(_NONCE_BYTES), digest)


def parse_private_options(raw: bytes) -> PrivateOptions:
    doc = _json_obj(raw, "private options")
    key = b64d(doc.get("symkey"), "symkey")
    if len(key) != _KEY_BYTES:
        raise _bad("symkey is not 32 bytes")
    opts = doc.get("cipheroptions")
    if not isinstance(opts, dict):
        raise _bad("private cipheroptions missing")
    nonce = b64d(opts.get("nonce"), "nonce")
    if len(nonce) != _NONCE_BYTES:
        raise _bad("nonce is not 16 bytes")
    digest = doc.get("digest", "")
    if not isinstance(digest, str):
        raise _bad("digest is not a string")
    return PrivateOptions(key, nonce, digest)


@dataclass(frozen=True, slots=True)
class AnnotationPacket:
    """CoCo's key-provider annotation (v1 fields; the v0.1.0 superset's extras are read)."""

    kid: str
    wrapped_data: bytes
    iv: bytes
    wrap_type: str
    provider: str = "kbs"

    def to_json(self) -> bytes:
        doc = {
            "kid": self.kid,
            "wrapped_data": _b64e(self.wrapped_data),
            "iv": _b64e(self.iv),
            "wrap_type": self.wrap_type,
        }
        return json.dumps(doc, separators=(",", ":")).encode()


def parse_packet(raw: bytes) -> AnnotationPacket:
    doc = _json_obj(raw, "annotation packet")
    kid = doc.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _bad("annotation packet has no kid")
    provider = doc.get("provider", "kbs")
    if not isinstance(provider, str):
        raise _bad("annotation packet provider is not a string")
    wrap_type = doc.get("wrap_type", WRAP_A256GCM)
    if not isinstance(wrap_type, str):
        raise _bad("wrap_type is not a string")
    return AnnotationPacket(
        normalize_kid(kid),
        b64d(doc.get("wrapped_data"), "wrapped_data"),
        b64d(doc.get("iv"), "iv"),
        wrap_type,
        provider,
    )


def normalize_kid(kid: str) -> str:
    """The accepted kid forms (§3.3) → ``kbs://[addr]/repo/type/tag`` / ``kbs+plugin://…``."""
    if kid.startswith(("kbs://", "kbs+")):
        return kid
    parts = [p for p in kid.split("/") if p]
    if kid.startswith("/") and len(parts) == 3:
        return "kbs:///" + "/".join(parts)
    if len(parts) == 4:  # addr/repo/type/tag
        return f"kbs://{parts[0]}/" + "/".join(parts[1:])
    raise _bad(f"kid {kid!r} is not a KBS resource URI")


def wrap_packet(kid: str, kek: bytes, opts: PrivateOptions) -> AnnotationPacket:
    """coco_keyprovider's producer side: A256GCM, random 12-byte IV, no AAD."""
    if len(kek) != _KEY_BYTES:
        raise ConfigError(f"the key for {kid} is {len(kek)} bytes, not 32", reason="image.kek")
    iv = os.urandom(_GCM_IV_BYTES)
    return AnnotationPacket(kid, AESGCM(kek).encrypt(iv, opts.to_json(), None), iv, WRAP_A256GCM)


def unwrap_packet(packet: AnnotationPacket, kek: bytes) -> PrivateOptions:
    """``optsdata = AES-256-GCM(KEK).decrypt(iv, wrapped_data)`` (§3.4 step 2)."""
    if packet.provider != "kbs":
        raise _bad(f"annotation packet provider {packet.provider!r} is not supported (kbs)")
    if packet.wrap_type != WRAP_A256GCM:
        raise _bad(f"wrap_type {packet.wrap_type!r} is not supported (A256GCM)")
    if len(kek) != _KEY_BYTES:
        raise VerificationError(
            f"the key {packet.kid} is {len(kek)} bytes, not a 32-byte AES key",
            reason="image.decrypt_key",
        )
    if len(packet.iv) != _GCM_IV_BYTES:
        raise _bad("annotation packet iv is not 12 bytes")
    try:
        raw = AESGCM(kek).decrypt(packet.iv, packet.wrapped_data, None)
    except InvalidTag:
        raise VerificationError(
            f"the key {packet.kid} does not unwrap this layer's key (wrong key)",
            reason="image.decrypt_key",
        ) from None
    return parse_private_options(raw)


def _ctr(opts: PrivateOptions) -> Cipher[modes.CTR]:
    return Cipher(algorithms.AES(opts.symkey), modes.CTR(opts.nonce))


class LayerDecrypter:
    """Streaming AES-256-CTR + HMAC-SHA256; ``finish()`` raises unless the HMAC matches.

    The caller must not use any plaintext before ``finish()`` returned (ocicrypt-rs checks the
    HMAC at EOF too; trustpod unpacks only after it)."""

    def __init__(self, opts: PrivateOptions, pub: PublicOptions) -> None:
        self._ctx: CipherContext = _ctr(opts).decryptor()
        self._mac = hmac.new(opts.symkey, digestmod="sha256")
        self._want = pub.hmac

    def update(self, chunk: bytes) -> bytes:
        self._mac.update(chunk)
        return self._ctx.update(chunk)

    def finish(self) -> bytes:
        tail = self._ctx.finalize()
        if not hmac.compare_digest(self._mac.digest(), self._want):
            raise VerificationError(
                "encrypted layer HMAC mismatch (tampered ciphertext or wrong layer key)",
                reason="image.decrypt_hmac",
            )
        return tail


class LayerEncrypter:
    """The producer side: ciphertext chunks, then ``public_options()`` with the HMAC."""

    def __init__(self, opts: PrivateOptions) -> None:
        self._ctx: CipherContext = _ctr(opts).encryptor()
        self._mac = hmac.new(opts.symkey, digestmod="sha256")

    def update(self, chunk: bytes) -> bytes:
        out = self._ctx.update(chunk)
        self._mac.update(out)
        return out

    def finish(self) -> tuple[bytes, PublicOptions]:
        tail = self._ctx.finalize()
        self._mac.update(tail)
        return tail, PublicOptions(CIPHER, self._mac.digest())
