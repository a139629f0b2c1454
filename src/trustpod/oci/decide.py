"""The signature-policy decision for one image (pure over ports; guest-and-control-plane.md §5.1).

``evaluate`` runs after the manifest is resolved and before any layer is fetched:

1. scope lookup: identity, repository, parent namespaces, host, ``*.`` wildcards, ``""``,
   ``default`` (containers/image order);
2. every requirement of that scope must pass (containers/image and image-rs);
3. ``signedBy``: signatures from the ``SignatureSource`` (lookaside store), OpenPGP-verified
   against the policy's keyring (``OpenPgpVerifier``), payload type ``atomic container
   signature``, ``signedIdentity`` (default ``matchRepoDigestOrExact``) and
   ``docker-manifest-digest`` == the digest the signature was found under;
4. ``sigstoreSigned``: the ``.sig`` layers (``SignatureSource.cosign_signatures``), ECDSA with the
   policy's key, payload type ``cosign container image signature``, identity only when
   configured (image-rs), digest == the image manifest digest or else the index digest;
5. the first signature that passes satisfies the requirement; when none does, the refusal names
   the image, the scope, the requirement and the last failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from trustpod.errors import PolicyDenied, TrustpodError, VerificationError
from trustpod.oci.payload import COSIGN_TYPE, SIMPLE_SIGNING_TYPE, SigningPayload, parse_payload
from trustpod.oci.policy import (
    Policy,
    Reject,
    Requirement,
    SignedBy,
    SignedIdentity,
    SigstoreSigned,
    identity_matches,
)
from trustpod.oci.reference import ImageReference

__all__ = [
    "Decision",
    "ImageRefused",
    "KeyLoader",
    "OpenPgpVerifier",
    "SignatureSource",
    "evaluate",
]


class ImageRefused(PolicyDenied):
    """The signature policy refused an image; names the image, the scope and what failed."""

    default_reason = "image.refused"

    def __init__(
        self, image: str, scope: str, requirement: str, failure: str, *, reason: str
    ) -> None:
        super().__init__(
            f"image {image} refused by policy scope {scope} ({requirement}): {failure}",
            reason=reason,
            fix="sign the image for this policy, or change the policy scope that applies",
        )
        self.image, self.scope, self.requirement, self.failure = image, scope, requirement, failure


class SignatureSource(Protocol):
    def simple_signatures(self, image: ImageReference, digest: str) -> Sequence[bytes]:
        """Raw simple-signing signatures stored for ``digest`` (possibly none)."""
        ...

    def cosign_signatures(
        self, image: ImageReference, digest: str
    ) -> Sequence[tuple[bytes, bytes]]:
        """(payload blob, signature) pairs of the ``.sig`` artifact; blobs digest-checked."""
        ...


class KeyLoader(Protocol):
    def load_key(self, key_path: str) -> bytes:
        """The bytes at a policy ``keyPath`` (``kbs://``, ``file://`` or a path)."""
        ...


class OpenPgpVerifier(Protocol):
    def verify(self, keyring: bytes, signature: bytes) -> tuple[bytes, str]:
        """(signed payload, primary key fingerprint), or raise ``VerificationError``."""
        ...


@dataclass(frozen=True, slots=True)
class Decision:
    image: str
    scope: str
    requirements: tuple[str, ...]
    #: Requirement type → fingerprint / key path that satisfied it.
    evidence: tuple[tuple[str, str], ...]


def _describe(req: Requirement) -> str:
    if isinstance(req, SignedBy | SigstoreSigned):
        key = req.key_path or "keyData"
        ident = req.signed_identity.describe() if req.signed_identity else "digest only"
        return f"{req.type} key={key} identity={ident}"
    return req.type


def _key(req: SignedBy | SigstoreSigned, keys: KeyLoader) -> bytes:
    if req.key_data is not None:
        return req.key_data
    assert req.key_path is not None  # parse_policy guarantees exactly one
    return keys.load_key(req.key_path)


def _check_payload(
    payload: SigningPayload,
    ident: SignedIdentity | None,
    image: ImageReference,
    digests: Sequence[str],
) -> None:
    # digest first, then identity: containers/image's order (verifyAndExtractSignature)
    if payload.manifest_digest not in digests:
        raise VerificationError(
            f"signature is for {payload.manifest_digest}, not {' or '.join(digests)}",
            reason="image.signature_digest",
        )
    if ident is not None and not identity_matches(ident, image, payload.docker_reference):
        raise VerificationError(
            f"signed identity {payload.docker_reference!r} does not match {image} "
            f"under {ident.describe()}",
            reason="image.signature_identity",
        )


def _signed_by(
    req: SignedBy,
    image: ImageReference,
    digests: Sequence[str],
    src: SignatureSource,
    keys: KeyLoader,
    pgp: OpenPgpVerifier,
) -> str:
    keyring = _key(req, keys)
    last: TrustpodError | None = None
    for digest in digests:
        for sig in src.simple_signatures(image, digest):
            try:
                data, fingerprint = pgp.verify(keyring, sig)
                _check_payload(
                    parse_payload(data, SIMPLE_SIGNING_TYPE), req.signed_identity, image, [digest]
                )
                return fingerprint
            except VerificationError as exc:
                last = exc
    if last is None:
        raise VerificationError(
            "no signature exists for this image", reason="image.signature_missing"
        )
    raise last


def _sigstore(
    req: SigstoreSigned,
    image: ImageReference,
    digests: Sequence[str],
    src: SignatureSource,
    keys: KeyLoader,
) -> str:
    from trustpod.oci.cosign import load_public_key, verify_blob  # cryptography: only when needed

    key = load_public_key(_key(req, keys), req.key_path or "keyData")
    last: TrustpodError | None = None
    seen = False
    for digest in digests:
        for blob, signature in src.cosign_signatures(image, digest):
            seen = True
            try:
                verify_blob(key, blob, signature)
                _check_payload(
                    parse_payload(blob, COSIGN_TYPE), req.signed_identity, image, digests
                )
                return req.key_path or "keyData"
            except VerificationError as exc:
                last = exc
    if not seen or last is None:
        raise VerificationError(
            "no cosign signature exists for this image", reason="image.signature_missing"
        )
    raise last


def evaluate(
    policy: Policy,
    image: ImageReference,
    manifest_digest: str,
    index_digest: str | None,
    source: SignatureSource,
    keys: KeyLoader,
    pgp: OpenPgpVerifier,
) -> Decision:
    """Accept ``image`` (resolved to ``manifest_digest``) or raise ``ImageRefused``."""
    scope, reqs = policy.requirements_for(image)
    digests = [manifest_digest] + (
        [index_digest] if index_digest and index_digest != manifest_digest else []
    )
    evidence: list[tuple[str, str]] = []
    for req in reqs:
        try:
            if isinstance(req, Reject):
                raise VerificationError("the policy rejects this image", reason="image.rejected")
            if isinstance(req, SignedBy):
                evidence.append((req.type, _signed_by(req, image, digests, source, keys, pgp)))
            elif isinstance(req, SigstoreSigned):
                evidence.append((req.type, _sigstore(req, image, digests, source, keys)))
        except VerificationError as exc:
            raise ImageRefused(
                str(image), scope, _describe(req), exc.message, reason=exc.reason
            ) from exc
    return Decision(str(image), scope, tuple(r.type for r in reqs), tuple(evidence))
