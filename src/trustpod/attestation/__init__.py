"""The built-in attestation service: policy input, default policies, EAR tokens (issue and
verify), the token signer and the service itself."""

from __future__ import annotations

from trustpod.attestation.ear import Appraisal, EarTokenSettings, claim_status, vector_status
from trustpod.attestation.policy_input import build_policy_input
from trustpod.attestation.signer import TokenSigner
from trustpod.attestation.token_verify import TokenVerifier

__all__ = [
    "Appraisal",
    "EarTokenSettings",
    "TokenSigner",
    "TokenVerifier",
    "build_policy_input",
    "claim_status",
    "vector_status",
]
