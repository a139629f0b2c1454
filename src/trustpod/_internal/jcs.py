"""RFC 8785 (JCS) canonical JSON, via the ``rfc8785`` library (§1.5 of the protocol notes)."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from trustpod.errors import EvidenceError

__all__ = ["canonical_json", "jcs_digest"]


def canonical_json(value: Any) -> bytes:
    """The JCS canonical UTF-8 bytes of a JSON value."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise EvidenceError(
            "value cannot be canonicalized as JSON (RFC 8785)", reason="encoding.jcs"
        ) from exc


def jcs_digest(value: Any, algorithm: str = "sha384") -> bytes:
    """HASH(JCS(value)); upstream uses SHA-384 for every TEE except SE (SHA-512)."""
    if algorithm not in ("sha256", "sha384", "sha512"):
        raise EvidenceError(f"unsupported hash algorithm {algorithm!r}", reason="encoding.hash_alg")
    return hashlib.new(algorithm, canonical_json(value)).digest()
