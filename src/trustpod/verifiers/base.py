"""The verifier interface and registry keyed by TEE name (kbs-types serde names).

Contract (upstream ``deps/verifier/src/lib.rs``): a verifier takes the TEE's ``primary_evidence``
JSON value, the expected report_data (the 48-byte runtime-data digest, or whatever the caller
binds), the expected initdata digest (or ``None`` when none was sent) and ``now``; it returns one
or more ``TeeClaims`` (claims JSON + tee class ``cpu``/``gpu``/...) or raises. It never returns a
failure value: every failed check raises ``VerificationError`` (or ``EvidenceError`` for bytes
that do not parse) naming the failed step in ``reason``.

Claims must use upstream's names and encodings per TEE, including ``report_data`` and
``init_data`` (the attestation service lifts those two to the top of the policy input).
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trustpod.errors import ConfigError, VerificationError

__all__ = [
    "TeeClaims",
    "Verifier",
    "VerifierFactory",
    "VerifierRegistry",
    "VerifierSettings",
    "VerifyInput",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VerifyInput:
    """What the caller expects the evidence to be bound to.

    Attributes:
        report_data: expected runtime-data binding (48-byte SHA-384 of the JCS runtime data in
            the KBS flow; arbitrary bytes from ``trustpod verify --report-data``).
        init_data_digest: expected initdata digest, or ``None`` when no initdata was sent.
        now: the time at which certificates, CRLs and collateral must be valid.
    """

    report_data: bytes
    init_data_digest: bytes | None
    now: _dt.datetime


@dataclass(frozen=True, slots=True)
class TeeClaims:
    """One claims set produced by a verifier, with its tee class (``cpu``, ``gpu``, ...).

    ``insecure`` names every insecure acceptance behind these claims (``"sample.no_root"``:
    no hardware root of trust; ``"snp.emulated_root"``: an ``insecure_emulated_roots`` chain).
    Verifiers warn once when built; the service counts these per attestation in a metric.
    """

    claims: dict[str, Any]
    tee_class: str = "cpu"
    insecure: tuple[str, ...] = ()


class Verifier(Protocol):
    """Port implemented by every TEE verifier."""

    tee: str

    def verify(self, evidence: Any, expected: VerifyInput) -> list[TeeClaims]:
        """Verify ``evidence`` (the ``primary_evidence`` JSON value) or raise."""
        ...


@dataclass(frozen=True, slots=True)
class VerifierSettings:
    """Settings shared by verifier factories (from ``[attestation_service.verifier_config]``).

    Attributes:
        collateral_dir: offline store / persistent cache for VCEKs, vendor roots and Intel
            collateral (layout in docs/collateral.md). ``None``: in-memory only.
        amd_kds_url: AMD KDS base URL, or ``None`` to stay offline.
        intel_pcs_url: Intel PCS/PCCS base URL, or ``None`` to stay offline.
        allowed_vmpls: SNP VMPLs accepted (upstream: only 0).
        insecure_emulated_roots: DER certificates of emulated vendor roots to trust in addition
            to the pinned real ones. Testing only; warns whenever a verifier is built with them.
        fetch_timeout_s: per-request timeout for collateral services.
        max_evidence_bytes: upper bound on any decoded evidence blob.
        extra: verifier-specific options by TEE name (``{"tdx": {"tcb_update_type": "early"}}``).
    """

    collateral_dir: Path | None = None
    amd_kds_url: str | None = None
    intel_pcs_url: str | None = None
    allowed_vmpls: frozenset[int] = frozenset({0})
    insecure_emulated_roots: tuple[bytes, ...] = ()
    fetch_timeout_s: float = 10.0
    max_evidence_bytes: int = 2 * 1024 * 1024
    extra: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


VerifierFactory = Callable[[VerifierSettings], Verifier]


class VerifierRegistry:
    """Verifiers keyed by TEE name. Unknown TEEs are errors (fail closed).

    Composition (which verifiers, with which collateral sources) is not done here: the I/O
    side builds the registry (``trustpod.collateral.wiring.build_verifiers``)."""

    def __init__(self, verifiers: Mapping[str, Verifier]) -> None:
        if not verifiers:
            raise ConfigError("no verifiers configured", reason="config.no_verifiers")
        self._verifiers = dict(verifiers)

    @property
    def tees(self) -> tuple[str, ...]:
        return tuple(sorted(self._verifiers))

    def get(self, tee: str) -> Verifier:
        try:
            return self._verifiers[tee]
        except KeyError:
            raise VerificationError(
                f"no verifier for TEE {tee!r}; known: {', '.join(self.tees)}",
                reason="verifier.unknown_tee",
            ) from None

    def verify(self, tee: str, evidence: Any, expected: VerifyInput) -> list[TeeClaims]:
        return self.get(tee).verify(evidence, expected)
