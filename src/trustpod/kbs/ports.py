"""Ports the KBS uses for the built-in attestation service and RVPS (implemented in
``trustpod.attestation`` / ``trustpod.rvps``; tests inject small fakes)."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["AttestationPort", "RvpsPort"]


class AttestationPort(Protocol):
    def evaluate(
        self,
        tee: str,
        primary_evidence: Any,
        runtime_data: dict[str, Any],
        init_data_toml: str | None,
        hash_algorithm: str = "sha384",
        policy_id: str = "default",
    ) -> str:
        """Verify evidence, appraise it with the attestation policy, return the EAR JWT."""
        ...

    def set_policy(self, policy_id: str, policy: str) -> None: ...


class RvpsPort(Protocol):
    def register(self, message: Any) -> Any: ...

    def query(self, name: str) -> Any: ...
