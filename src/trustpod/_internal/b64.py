"""Strict base64 helpers: every decode failure becomes an ``EvidenceError`` naming the field."""

from __future__ import annotations

import base64
import binascii

from trustpod.errors import EvidenceError

__all__ = ["b64_decode", "b64_encode", "b64url_decode", "b64url_encode"]


def b64_encode(data: bytes) -> str:
    """Standard base64 with padding."""
    return base64.b64encode(data).decode("ascii")


def b64url_encode(data: bytes) -> str:
    """URL-safe base64 without padding (JOSE style)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64_decode(text: str, *, field: str = "value") -> bytes:
    """Decode standard base64 (padding required), rejecting any non-alphabet character."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise EvidenceError(
            f"{field} is not valid standard base64", reason="encoding.base64"
        ) from exc


def b64url_decode(text: str, *, field: str = "value") -> bytes:
    """Decode URL-safe base64 with or without padding, rejecting non-alphabet characters."""
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise EvidenceError(f"{field} is not valid base64url", reason="encoding.base64url") from exc
    stripped = raw.rstrip(b"=")
    if len(raw) - len(stripped) > 2 or len(stripped) % 4 == 1:
        raise EvidenceError(f"{field} is not valid base64url", reason="encoding.base64url")
    if stripped.translate(
        None, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    ):
        raise EvidenceError(f"{field} is not valid base64url", reason="encoding.base64url")
    try:
        return base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:
        raise EvidenceError(f"{field} is not valid base64url", reason="encoding.base64url") from exc
