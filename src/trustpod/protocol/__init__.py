"""Trustee KBS protocol (RCAR 0.4.0) wire types, runtime-data binding and the resource JWE.

Pure: no network, disk or clock access. The KBS server (``trustpod.kbs``) and the guest client
(``trustpod.guest.kbs_client``) both build on these functions so the two sides can never drift.
Reference: trustee-protocol.md §1 (``kbs/src/attestation/backend.rs``, ``kbs/src/jwe/mod.rs``,
kbs-types 0.18 ``src/lib.rs``).
"""

from __future__ import annotations

from trustpod.protocol.constants import (
    DEFAULT_HASH_ALGORITHM,
    ERROR_TYPE_PREFIX,
    KNOWN_TEES,
    PROTOCOL_VERSION,
    SESSION_COOKIE,
    SUPPORTED_HASH_ALGORITHMS,
)
from trustpod.protocol.jwe import decrypt_response, encrypt_response
from trustpod.protocol.messages import (
    Attestation,
    AttestResponse,
    Challenge,
    CompositeEvidence,
    ErrorInformation,
    InitDataMsg,
    Request,
    RuntimeData,
    error_type_url,
)
from trustpod.protocol.nonce import new_nonce
from trustpod.protocol.runtime_data import (
    device_runtime_data_object,
    runtime_data_digest,
    runtime_data_object,
)
from trustpod.protocol.tee_pubkey import TeePubKey

__all__ = [
    "DEFAULT_HASH_ALGORITHM",
    "ERROR_TYPE_PREFIX",
    "KNOWN_TEES",
    "PROTOCOL_VERSION",
    "SESSION_COOKIE",
    "SUPPORTED_HASH_ALGORITHMS",
    "AttestResponse",
    "Attestation",
    "Challenge",
    "CompositeEvidence",
    "ErrorInformation",
    "InitDataMsg",
    "Request",
    "RuntimeData",
    "TeePubKey",
    "decrypt_response",
    "device_runtime_data_object",
    "encrypt_response",
    "error_type_url",
    "new_nonce",
    "runtime_data_digest",
    "runtime_data_object",
]
