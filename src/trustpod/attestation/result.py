"""What the attestation service hands back to its caller (the KBS): the typed appraisal result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AttestationResult"]


@dataclass(frozen=True, slots=True)
class AttestationResult:
    """A signed EAR token plus what explains it.

    Attributes:
        token: the EAR JWT, signed by the service's key.
        claims: exactly the claims inside ``token`` (the KBS caches them as verified).
        explain: per submod the policy id, its SHA-256, status and trust vector; the reference
            value names consulted; whether initdata was sent. The KBS puts it in the audit
            log of a later denial, never in a client-facing body.
        insecure: every insecure acceptance behind the claims (``TeeClaims.insecure``:
            ``"sample.no_root"``, ``"snp.emulated_root"``), counted in a KBS metric.
    """

    token: str
    claims: dict[str, Any]
    explain: dict[str, Any] = field(default_factory=dict)
    insecure: tuple[str, ...] = ()
