"""EAR (EAT Attestation Result) appraisals and token claims (protocol §4.3, veraison ``ear`` 0.5).

An appraisal per claims set: the AR4SI trust vector from the policy's ``trust_claims``, its
status tier, the base policy id, the annotated evidence (the policy input) and the policy's
extensions. The token claims are ``eat_profile, iat, ear.verifier-id, submods, exp, iss``; the
token is an ES256 compact JWS signed by ``trustpod.attestation.signer.TokenSigner`` and verified
by ``TokenVerifier`` (``trustpod.attestation.token_verify``, re-exported here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustpod.attestation.token_verify import TokenVerifier
from trustpod.errors import PolicyDenied

__all__ = [
    "STATUS_ORDER",
    "TRUST_CLAIMS",
    "Appraisal",
    "EarTokenSettings",
    "TokenVerifier",
    "claim_status",
    "ear_claims",
    "trust_vector_from_policy",
    "vector_status",
]

#: AR4SI claim names in the order rust-ear serializes them.
TRUST_CLAIMS = (
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
)
#: Status tiers, best to worst ("worst wins").
STATUS_ORDER = ("none", "affirming", "warning", "contraindicated")
_RESERVED = (
    "ear.status",
    "ear.trustworthiness-vector",
    "ear.appraisal-policy-id",
    "ear.veraison.annotated-evidence",
)


@dataclass(frozen=True, slots=True)
class EarTokenSettings:
    """``[attestation_service.attestation_token_broker]`` (upstream ``EarTokenConfiguration``)."""

    duration_min: int = 5
    issuer_name: str = "CoCo-Attestation-Service"
    developer_name: str = "https://confidentialcontainers.org"
    build_name: str = "trustpod-attestation-service"
    profile_name: str = "tag:github.com,2024:confidential-containers/Trustee"
    verbose_token: bool = True
    signer_key_path: str | Path | None = None
    signer_cert_path: str | Path | None = None
    signer_cert_url: str | None = None


def claim_status(value: int) -> str:
    """rust-ear ``TrustClaim`` tier: -1..1 none, |v|<32 affirming, |v|<96 warning, else
    contraindicated."""
    if -1 <= value <= 1:
        return "none"
    if abs(value) < 32:
        return "affirming"
    if abs(value) < 96:
        return "warning"
    return "contraindicated"


def vector_status(vector: Mapping[str, int]) -> str:
    """The worst tier over the set claims (``update_status_from_trust_vector``)."""
    worst = 0
    for value in vector.values():
        worst = max(worst, STATUS_ORDER.index(claim_status(value)))
    return STATUS_ORDER[worst]


def trust_vector_from_policy(result: Any) -> dict[str, int]:
    """Validate ``data.policy.trust_claims`` and return it in AR4SI order (only set claims)."""
    # (1) The rule must be an object naming known claims with i8 integers (upstream bails on
    # anything else; an unknown name panics there).
    if not isinstance(result, dict):
        raise PolicyDenied(
            "the attestation policy set no trust claims (trust_claims undefined)",
            reason="policy.trust_claims",
            fix='the policy must define trust_claims := {"hardware": 2, ...}',
        )
    vector: dict[str, int] = {}
    for name in TRUST_CLAIMS:
        if name not in result:
            continue
        value = result[name]
        if isinstance(value, bool) or not isinstance(value, int) or not -128 <= value <= 127:
            raise PolicyDenied(
                f"trust claim {name!r} must be an integer in -128..127",
                reason="policy.trust_claims",
            )
        vector[name] = value
    unknown = sorted(set(result) - set(TRUST_CLAIMS))
    if unknown:
        raise PolicyDenied(f"unknown trust claims {unknown[:8]}", reason="policy.trust_claims")
    # (2) At least one claim must be set.
    if not vector:
        raise PolicyDenied("At least one policy claim must be set.", reason="policy.trust_claims")
    return vector


def _extensions(result: Any) -> dict[str, Any]:
    if result is None:
        return {}
    if not isinstance(result, list):
        raise PolicyDenied("policy extensions must be a list", reason="policy.extensions")
    out: dict[str, Any] = {}
    for ext in result:
        if not isinstance(ext, dict) or not isinstance(ext.get("name"), str) or "value" not in ext:
            raise PolicyDenied(
                "each policy extension needs a name and a value", reason="policy.extensions"
            )
        if ext["name"] in _RESERVED:
            raise PolicyDenied(
                f"extension name {ext['name']!r} is reserved", reason="policy.extensions"
            )
        out[ext["name"]] = ext["value"]
    return out


@dataclass(frozen=True, slots=True)
class Appraisal:
    """One EAR submod."""

    trust_vector: dict[str, int]
    policy_id: str
    annotated_evidence: dict[str, Any]
    extensions: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return vector_status(self.trust_vector)

    @classmethod
    def from_policy(
        cls, results: Mapping[str, Any], policy_id: str, annotated_evidence: dict[str, Any]
    ) -> Appraisal:
        return cls(
            trust_vector=trust_vector_from_policy(results.get("trust_claims")),
            policy_id=policy_id,
            annotated_evidence=annotated_evidence,
            extensions=_extensions(results.get("extensions")),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ear.status": self.status,
            "ear.trustworthiness-vector": dict(self.trust_vector),
            "ear.appraisal-policy-id": self.policy_id,
            "ear.veraison.annotated-evidence": self.annotated_evidence,
        }
        out.update(self.extensions)
        return out


def submod_names(classes: Sequence[str]) -> list[str]:
    """``<tee_class><index>`` per class: cpu0, gpu0, gpu1, ..."""
    seen: dict[str, int] = {}
    names = []
    for cls in classes:
        seen[cls] = seen.get(cls, -1) + 1
        names.append(f"{cls}{seen[cls]}")
    return names


def ear_claims(
    settings: EarTokenSettings, submods: Mapping[str, Appraisal], now: int
) -> dict[str, Any]:
    """The JWT claims set (key order as upstream's serialization)."""
    return {
        "eat_profile": settings.profile_name,
        "iat": now,
        "ear.verifier-id": {"developer": settings.developer_name, "build": settings.build_name},
        "submods": {name: submods[name].to_json() for name in sorted(submods)},
        "exp": now + settings.duration_min * 60,
        "iss": settings.issuer_name,
    }
