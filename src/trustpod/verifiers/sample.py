"""Verifier for the ``sample`` TEE (no hardware; tests and demos only, never production trust).

Upstream: ``deps/verifier/src/sample/mod.rs``. Evidence (``primary_evidence``), as produced by
``trustpod.guest.attesters.sample``::

    {"svn": "1", "report_data": "<standard base64 of the report data>"}

Steps:
  (1) Parse: ``svn`` must be a string (required), ``report_data`` a string (default ``""``);
      other members are ignored, as upstream (serde default).
  (2) No signature: there is no hardware (upstream: "Null for sample TEE").
  (3) REPORT_DATA: base64-decoded ``report_data`` must equal the expected report data exactly
      (48 bytes for the SHA-384 runtime-data digest, no padding; protocol §1.5).
  (4) Init-data: not bindable. When a digest is expected, the ``init_data`` claim is the
      standard base64 of that digest (protocol §4.6), so the AS adds ``init_data_claims``.
  (5) Claims as upstream's ``parse_tee_evidence``: ``svn``, ``report_data`` (evidence string),
      ``launch_digest`` ``"abcde"``, ``platform_version {major 1, minor 4}``, ``debug`` false.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Any

from trustpod._internal.b64 import b64_decode, b64_encode
from trustpod.errors import EvidenceError, VerificationError
from trustpod.verifiers.base import TeeClaims, VerifierSettings, VerifyInput

__all__ = [
    "INSECURE_NO_ROOT",
    "SAMPLE_DEBUG",
    "SAMPLE_LAUNCH_DIGEST",
    "SAMPLE_PLATFORM_VERSION",
    "SampleEvidence",
    "SampleVerifier",
    "create",
]

_log = logging.getLogger(__name__)

#: Fixed claims emitted by upstream's sample verifier (the policy's sample rules check them).
SAMPLE_LAUNCH_DIGEST = "abcde"
SAMPLE_PLATFORM_VERSION = {"major": 1, "minor": 4}
SAMPLE_DEBUG = False
#: ``TeeClaims.insecure`` marker of every sample acceptance.
INSECURE_NO_ROOT = "sample.no_root"


@dataclass(frozen=True, slots=True)
class SampleEvidence:
    """Parsed ``sample`` evidence."""

    svn: str
    report_data: str

    @classmethod
    def parse(cls, evidence: Any, *, max_bytes: int) -> SampleEvidence:
        if not isinstance(evidence, dict):
            raise EvidenceError("sample evidence must be a JSON object", reason="sample.malformed")
        svn = evidence.get("svn")
        report_data = evidence.get("report_data", "")
        if not isinstance(svn, str):
            raise EvidenceError("sample evidence needs an svn string", reason="sample.malformed")
        if not isinstance(report_data, str):
            raise EvidenceError("sample report_data must be a string", reason="sample.malformed")
        if len(svn) + len(report_data) > max_bytes:
            raise EvidenceError("sample evidence is too large", reason="sample.too_large")
        return cls(svn=svn, report_data=report_data)


class SampleVerifier:
    """``Verifier`` for tee ``sample`` (class ``cpu``)."""

    tee = "sample"

    def __init__(self, settings: VerifierSettings) -> None:
        self._max = settings.max_evidence_bytes

    def verify(self, evidence: Any, expected: VerifyInput) -> list[TeeClaims]:
        # (1) Parse.
        ev = SampleEvidence.parse(evidence, max_bytes=self._max)
        # (2) No hardware signature to check (warned once at start; counted per attestation).
        # (3) REPORT_DATA, exact bytes (§1.5).
        got = b64_decode(ev.report_data, field="sample report_data")
        if not hmac.compare_digest(got, expected.report_data):
            raise VerificationError(
                "REPORT_DATA is different from that in the sample evidence",
                reason="sample.report_data",
                fix="the evidence must carry the runtime-data digest of this attestation",
            )
        # (5) Claims (upstream parse_tee_evidence).
        claims: dict[str, Any] = {
            "svn": ev.svn,
            "report_data": ev.report_data,
            "launch_digest": SAMPLE_LAUNCH_DIGEST,
            "platform_version": dict(SAMPLE_PLATFORM_VERSION),
            "debug": SAMPLE_DEBUG,
        }
        # (4) Init-data: echoed, not bound (no hardware field to bind it into).
        if expected.init_data_digest is not None:
            claims["init_data"] = b64_encode(expected.init_data_digest)
        return [TeeClaims(claims=claims, tee_class="cpu", insecure=(INSECURE_NO_ROOT,))]


def create(settings: VerifierSettings) -> SampleVerifier:
    """Factory of the ``sample`` verifier; warns once that it has no root of trust."""
    _log.warning(
        "the sample TEE verifier is enabled: sample evidence is accepted without any hardware "
        "root of trust (each acceptance is counted as %r)",
        INSECURE_NO_ROOT,
    )
    return SampleVerifier(settings)
