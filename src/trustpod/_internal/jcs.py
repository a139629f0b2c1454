"""RFC 8785 (JCS) canonical JSON, via the ``rfc8785`` library (§1.5 of the protocol notes).

Fast path: for values made only of strings, booleans, null, integers within ±(2**53 - 1), lists
and objects with ASCII keys, ``json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` produces exactly the JCS bytes (same escapes: ``\\"``, ``\\\\``, ``\\b``,
``\\f``, ``\\n``, ``\\r``, ``\\t``, other controls as lowercase ``\\u00xx``; ASCII keys sort the
same by code point as by UTF-16 unit) at a tenth of the cost; every other value (floats, big
integers, non-ASCII keys, lone surrogates) goes through ``rfc8785``. A hypothesis test checks
both paths agree.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785

from trustpod.errors import EvidenceError

__all__ = ["canonical_json", "jcs_digest"]

_MAX_SAFE_INT = 2**53 - 1


def _plain(value: Any) -> bool:
    """True when the fast path serialises ``value`` exactly as JCS does."""
    if value is None or value is True or value is False or isinstance(value, str):
        return True
    if isinstance(value, int):
        return type(value) is int and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and k.isascii() and _plain(v) for k, v in value.items())
    return False


def canonical_json(value: Any) -> bytes:
    """The JCS canonical UTF-8 bytes of a JSON value."""
    try:
        if _plain(value):
            text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            return text.encode("utf-8")  # a lone surrogate raises: rfc8785 decides below
    except (UnicodeEncodeError, RecursionError):
        pass
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as exc:
        raise EvidenceError(
            "value cannot be canonicalized as JSON (RFC 8785)", reason="encoding.jcs"
        ) from exc


def jcs_digest(value: Any, algorithm: str = "sha384") -> bytes:
    """HASH(JCS(value)); upstream uses SHA-384 for every TEE except SE (SHA-512)."""
    if algorithm not in ("sha256", "sha384", "sha512"):
        raise EvidenceError(f"unsupported hash algorithm {algorithm!r}", reason="encoding.hash_alg")
    return hashlib.new(algorithm, canonical_json(value)).digest()
