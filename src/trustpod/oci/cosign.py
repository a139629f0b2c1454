"""Cosign key-based signatures (sigstore/cosign SIGNATURE_SPEC, pods-images-gpu.md §2.3) — pure.

Storage: tag ``sha256-<hex>.sig`` in the image's repository; an OCI manifest whose layers have
media type ``application/vnd.dev.cosign.simplesigning.v1+json``, each layer blob a simple-signing
payload and its annotation ``dev.cosignproject.cosign/signature`` the base64 signature over the
blob. Verification is plain ECDSA over SHA-256 of the blob (cosign's default P-256 keys); the
base64 text is stripped of ``\\n``/``\\r`` first (image-rs). The Sigstore bundle / OCI referrer
format of cosign ≥ 3 is not read (image-rs at HEAD does not read it either).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trustpod.errors import ConfigError, VerificationError
from trustpod.oci.manifest import Descriptor, ImageManifest

if TYPE_CHECKING:  # cryptography is imported on first use (pod VM start-up time)
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "COSIGN_LAYER_TYPE",
    "SIGNATURE_ANNOTATION",
    "CosignLayer",
    "load_public_key",
    "signature_layers",
    "signature_tag",
    "verify_blob",
]

COSIGN_LAYER_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


def signature_tag(manifest_digest: str) -> str:
    """``sha256:<hex>`` → ``sha256-<hex>.sig``."""
    return manifest_digest.replace(":", "-", 1) + ".sig"


@dataclass(frozen=True, slots=True)
class CosignLayer:
    blob: Descriptor
    signature: bytes


def signature_layers(manifest: ImageManifest, *, max_layers: int = 64) -> list[CosignLayer]:
    """The signature layers of a ``.sig`` manifest (others are ignored, as cosign does)."""
    out = []
    for layer in manifest.layers:
        if layer.media_type != COSIGN_LAYER_TYPE:
            continue
        text = layer.annotation(SIGNATURE_ANNOTATION)
        if text is None:
            continue
        try:
            sig = base64.b64decode(text.replace("\n", "").replace("\r", ""), validate=True)
        except (binascii.Error, ValueError):
            continue  # an undecodable signature cannot verify; others may
        out.append(CosignLayer(layer, sig))
        if len(out) >= max_layers:
            break
    return out


def load_public_key(pem: bytes, source: str) -> ec.EllipticCurvePublicKey:
    """A cosign public key (PEM ``PUBLIC KEY``, ECDSA); ``ConfigError`` otherwise."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"cosign key {source} is not a PEM public key: {exc}", reason="image.cosign_key"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(
            f"cosign key {source} is not an ECDSA key (only ECDSA cosign keys are supported)",
            reason="image.cosign_key",
        )
    return key


def verify_blob(key: ec.EllipticCurvePublicKey, blob: bytes, signature: bytes) -> None:
    """ECDSA-SHA256 (ASN.1 DER signature) over the payload blob; raises ``VerificationError``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key.verify(signature, blob, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise VerificationError(
            "cosign signature does not verify with the policy's key",
            reason="image.signature_invalid",
        ) from None
