"""Ports the KBS uses for the attestation service and RVPS (implemented by
``trustpod.attestation.service.AttestationService`` / ``trustpod.rvps.ReferenceValueStore``).

One attestation-service operation: ``appraise`` verifies evidence, appraises it with the
attestation policy and returns a typed ``AttestationResult`` (token, its claims, the
explanation the audit log keeps, insecure acceptances for the metric), or raises.
"""

from __future__ import annotations

from typing import Any, Protocol

from trustpod.attestation.result import AttestationResult

__all__ = ["AttestationPort", "RvpsPort"]


class AttestationPort(Protocol):
    def appraise(
        self,
        tee: str,
        primary_evidence: Any,
        runtime_data: dict[str, Any],
        init_data_toml: str | None,
        *,
        hash_algorithm: str = "sha384",
        policy_id: str = "default",
        additional_evidence: str = "",
    ) -> AttestationResult:
        """Verify evidence (and the devices' ``additional_evidence`` JSON string), appraise it
        with the attestation policy, sign the EAR."""
        ...

    def set_policy(self, policy_id: str, policy: str) -> None: ...


class RvpsPort(Protocol):
    def register(self, message: Any) -> Any: ...

    def query(self, name: str) -> Any: ...
