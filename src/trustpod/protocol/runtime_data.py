"""Runtime-data → report_data binding (trustee-protocol.md §1.5, gc ``rcar_client.rs``).

The primary evidence binds ``HASH(JCS({"additional-evidence", "nonce", "tee-pubkey"}))``: three
keys, even when ``additional-evidence`` is ``""``. Additional devices bind the two-key object.
JCS is RFC 8785 (``trustpod._internal.jcs``); HASH is SHA-384 except SHA-512 for IBM SE.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trustpod._internal.jcs import jcs_digest

__all__ = [
    "device_runtime_data_object",
    "hash_algorithm_for_tee",
    "runtime_data_digest",
    "runtime_data_object",
]


def runtime_data_object(
    nonce: str, tee_pubkey_json: Mapping[str, Any], additional_evidence: str = ""
) -> dict[str, Any]:
    """The object hashed into the primary evidence's report_data."""
    return {
        "additional-evidence": additional_evidence,
        "nonce": nonce,
        "tee-pubkey": dict(tee_pubkey_json),
    }


def device_runtime_data_object(nonce: str, tee_pubkey_json: Mapping[str, Any]) -> dict[str, Any]:
    """The object hashed into each additional (device) evidence's report_data."""
    return {"nonce": nonce, "tee-pubkey": dict(tee_pubkey_json)}


def runtime_data_digest(
    nonce: str,
    tee_pubkey_json: Mapping[str, Any],
    additional_evidence: str = "",
    algorithm: str = "sha384",
) -> bytes:
    """``HASH(JCS(runtime_data_object(...)))``: 48 bytes for the default SHA-384."""
    return jcs_digest(runtime_data_object(nonce, tee_pubkey_json, additional_evidence), algorithm)


def hash_algorithm_for_tee(tee: str) -> str:
    """The server-side digest algorithm (backend.rs): SHA-512 for ``se``, SHA-384 otherwise."""
    return "sha512" if tee == "se" else "sha384"
