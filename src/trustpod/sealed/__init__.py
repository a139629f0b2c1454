"""Sealed secrets (pure): the ``sealed.`` wire format, payloads, keys and envelope crypto.

See guest-and-control-plane.md §3.3. Typical use::

    sealed = parse(text)                       # typed, not yet trusted
    verify(sealed, load_public_key(jwk_bytes)) # ES256; raises VerificationError
    match sealed.payload: VaultSecret(...) | EnvelopeSecret(...)
"""

from __future__ import annotations

from trustpod.sealed.envelope import kek_from_resource, open_envelope, seal_envelope
from trustpod.sealed.format import (
    PREFIX,
    SealedSecret,
    insecure_seal_unsigned,
    is_sealed,
    parse,
    seal,
    verify,
)
from trustpod.sealed.keys import (
    KidRef,
    classify_kid,
    generate_signing_key,
    load_private_jwk,
    load_public_key,
    private_jwk,
    public_jwk,
)
from trustpod.sealed.payload import (
    SECRET_VERSION,
    EnvelopeSecret,
    SecretPayload,
    VaultSecret,
    parse_payload,
    payload_json,
)
from trustpod.sealed.resource_uri import ResourceUri, is_resource_uri

__all__ = [
    "PREFIX",
    "SECRET_VERSION",
    "EnvelopeSecret",
    "KidRef",
    "ResourceUri",
    "SealedSecret",
    "SecretPayload",
    "VaultSecret",
    "classify_kid",
    "generate_signing_key",
    "insecure_seal_unsigned",
    "is_resource_uri",
    "is_sealed",
    "kek_from_resource",
    "load_private_jwk",
    "load_public_key",
    "open_envelope",
    "parse",
    "parse_payload",
    "payload_json",
    "private_jwk",
    "public_jwk",
    "seal",
    "seal_envelope",
    "verify",
]
