"""The ``Attester`` port: what the KBS client and the attestation agent need from a TEE.

Mirrors guest-components' ``Attester`` trait (``attestation-agent/attester/src/lib.rs``):
``get_evidence(report_data)`` returns the ``primary_evidence`` JSON value sent in
``tee-evidence`` (trustee-protocol.md §1.4, §5 table), ``bind_init_data(digest)`` binds the
initdata digest into the TEE where the platform can (PCR 8 on vTPM), and
``extend_runtime_measurement(event_digest, register_index)`` extends a runtime measurement
register. Platforms that cannot do the last two raise ``UnsupportedAttesterFeature``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from trustpod.errors import EvidenceError

__all__ = ["Attester", "UnsupportedAttesterFeature", "unsupported"]


class UnsupportedAttesterFeature(EvidenceError):
    """The attester's platform cannot do this (bind initdata, extend a runtime measurement)."""

    default_reason = "attester.unsupported"


def unsupported(tee: str, feature: str) -> UnsupportedAttesterFeature:
    """The error an attester raises for a feature its platform lacks."""
    return UnsupportedAttesterFeature(
        f"the {tee} attester does not support {feature}",
        fix="use a TEE platform that supports it, or do not configure it",
    )


@runtime_checkable
class Attester(Protocol):
    """Produces evidence for one TEE type (``tee`` is the kbs-types serde name)."""

    tee: str

    def get_evidence(self, report_data: bytes) -> Any:
        """The ``primary_evidence`` JSON value binding ``report_data`` (usually 48 bytes).

        The attester pads/truncates ``report_data`` to its platform's field (SNP/TDX 64 bytes,
        TPM per upstream) exactly as upstream's attester does.
        """
        ...

    def bind_init_data(self, digest: bytes) -> None:
        """Bind the initdata digest into the TEE, or raise ``UnsupportedAttesterFeature``."""
        ...

    def extend_runtime_measurement(self, event_digest: bytes, register_index: int) -> None:
        """Extend a runtime measurement register, or raise ``UnsupportedAttesterFeature``."""
        ...
