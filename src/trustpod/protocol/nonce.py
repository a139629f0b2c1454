"""Challenge nonces: standard base64 (with padding) of 32 random bytes (``make_nonce``, §1.3)."""

from __future__ import annotations

import base64
import secrets

__all__ = ["NONCE_BYTES", "new_nonce"]

#: Random bytes per nonce (upstream ``make_nonce``: 32 bytes from OsRng).
NONCE_BYTES = 32


def new_nonce() -> str:
    """A fresh nonce: 44 characters of standard base64 ending in ``=``."""
    return base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode("ascii")
