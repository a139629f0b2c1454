"""Verifier for the ``nvidia`` TEE (confidential GPUs; Hopper locally, Blackwell/LS10 refused).

Upstream: ``deps/verifier/src/nvidia/{mod,report,cert_chain}.rs`` (local verifier). Evidence:
``trustpod.evidence.nvidia_json``. Per device, in upstream's order:

  (1) Parse the device entry and the SPDM request||response (``trustpod.evidence.nvidia_spdm``,
      exact lengths); the architecture's profile gives the signature size and the FWID reader.
  (2) Signature: ECDSA P-384 / SHA-384, raw r||s, over every byte before the signature, by the
      leaf of the device chain (``report.rs verify_signature``).
  (3) Chain (``nvidia_chain``: pinned NVIDIA device root, issuers, validity at ``now``) and FWID:
      the leaf's DICE TcbInfo FWID must equal the report's opaque ``fwid``.
  (4) Nonce: the request nonce must equal the expected report data regularized to 32 bytes
      (zero-pad or truncate, ``SPDM_NONCE_SIZE``): in the KBS flow the first 32 bytes of the
      runtime-data digest, so the GPU report is bound to this attestation's challenge.
  (5) Claims ``{"arch", "uuid", "measurements": {"<index>": "<hex>"}, "config": {<opaque>}}``
      (upstream ``NvDeviceReportAndCertClaim``); class ``gpu`` (``switch`` for LS10).

  (6) Optional, beyond upstream's local verifier: with a RIM checker configured (offline RIM
      store + RIM roots, ``trustpod.verifiers.nvidia_rim``) the driver and VBIOS RIMs are
      verified and compared, adding NRAS-named RIM claims (``measres``, ...).
  (7) Optional OCSP of the device chain (``nvidia_ocsp``, ``ocsp_url``): every certificate
      ``good``, then NRAS' chain claims are added so upstream's default GPU policy scores them.

Init-data is not bindable into GPU evidence (upstream ignores it too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from trustpod.errors import ConfigError, VerificationError
from trustpod.evidence.nvidia_json import (
    DEFAULT_MAX_DEVICES,
    NvidiaDeviceEvidence,
    parse_device_list,
)
from trustpod.evidence.nvidia_spdm import HOPPER_SIGNATURE_SIZE, SPDM_NONCE_SIZE, NvidiaReport
from trustpod.verifiers.base import TeeClaims, VerifierSettings, VerifyInput
from trustpod.verifiers.nvidia_chain import (
    DEFAULT_CHAIN_CACHE_SIZE,
    DEFAULT_MAX_CHAIN_LEN,
    DeviceChainCache,
    DeviceRoots,
)

if TYPE_CHECKING:
    from trustpod.verifiers.nvidia_ocsp import OcspChecker
    from trustpod.verifiers.nvidia_rim import RimChecker

__all__ = [
    "INSECURE_EMULATED_ROOT",
    "OPTIONS",
    "PROFILES",
    "ArchProfile",
    "NvidiaVerifier",
    "create",
    "nras_chain_claims",
    "regularize_nonce",
    "verify_device",
    "verify_report_signature",
]

_log = logging.getLogger(__name__)
#: ``[trustpod.verifier_options.nvidia]`` keys (``rim_service_url``: see collateral.nvidia).
OPTIONS = ("max_devices", "max_chain_len", "rim_service_url", "ocsp_url")
#: ``TeeClaims.insecure`` marker of a GPU accepted through an emulated device root.
INSECURE_EMULATED_ROOT = "nvidia.emulated_root"


@dataclass(frozen=True, slots=True)
class ArchProfile:
    """What differs between architectures. ``local`` False: refused by the local verifier
    (upstream: "Device architecture not supported"); Blackwell's FWID lives in
    ``fwids[0]`` of ``DiceTcbInfoAlias`` (trustee PR #1551) and slots in here when added."""

    arch: str
    signature_size: int
    local: bool


PROFILES: dict[str, ArchProfile] = {
    "Hopper": ArchProfile("Hopper", HOPPER_SIGNATURE_SIZE, local=True),
    "Blackwell": ArchProfile("Blackwell", HOPPER_SIGNATURE_SIZE, local=False),
    "LS10": ArchProfile("LS10", HOPPER_SIGNATURE_SIZE, local=False),
}


def regularize_nonce(report_data: bytes) -> bytes:
    """Upstream ``regularize_data(.., SPDM_NONCE_SIZE)``: zero-pad or truncate to 32 bytes."""
    return report_data[:SPDM_NONCE_SIZE].ljust(SPDM_NONCE_SIZE, b"\0")


def verify_report_signature(report: NvidiaReport, key: ec.EllipticCurvePublicKey) -> None:
    """(2) Raw r||s ECDSA P-384 over SHA-384 of the signed bytes."""
    half = len(report.signature) // 2
    r = int.from_bytes(report.signature[:half], "big")
    s = int.from_bytes(report.signature[half:], "big")
    try:
        key.verify(encode_dss_signature(r, s), report.signed, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise VerificationError(
            "NVIDIA report signature verification failed", reason="nvidia.signature"
        ) from None


def verify_device(
    device: NvidiaDeviceEvidence,
    expected_nonce: bytes,
    verify_chain: Callable[[bytes], Any],
) -> tuple[NvidiaReport, Any]:
    """Steps (1)-(4) for one device; returns the report and its verified ``DeviceChain``.

    ``verify_chain(pem) -> DeviceChain`` is ``DeviceChainCache.verify`` bound to roots and now.
    """
    # (1)
    profile = PROFILES[device.arch]
    if not profile.local:
        raise VerificationError(
            f"NVIDIA {device.arch} evidence is not supported by the local verifier",
            reason="nvidia.arch_unsupported",
            fix="only Hopper GPUs are verified locally (as upstream)",
        )
    report = NvidiaReport.parse(device.report, profile.signature_size)
    chain = verify_chain(device.chain_pem)
    # (2)
    verify_report_signature(report, chain.leaf_key)
    # (3) chain verified above; FWID binds the leaf to this firmware's report
    fwid = report.response.config.get("fwid")
    if not isinstance(fwid, str):
        raise VerificationError("NVIDIA report fwid not found", reason="nvidia.fwid_missing")
    if fwid != chain.fwid.hex():
        raise VerificationError(
            f"Fwid mismatch: certificate {chain.fwid.hex()[:16]}..., evidence {fwid[:16]}...",
            reason="nvidia.fwid_mismatch",
        )
    # (4)
    if report.request.nonce != expected_nonce:
        raise VerificationError(
            "NVIDIA report nonce mismatch",
            reason="nvidia.nonce",
            fix="the GPU evidence must be taken with this attestation's runtime-data digest",
        )
    return report, chain


class NvidiaVerifier:
    """``Verifier`` for tee ``nvidia`` (class ``gpu``; ``switch`` for NVSwitches)."""

    tee = "nvidia"

    def __init__(
        self,
        roots: DeviceRoots | None = None,
        *,
        max_evidence_bytes: int = 2 * 1024 * 1024,
        max_devices: int = DEFAULT_MAX_DEVICES,
        max_chain_len: int = DEFAULT_MAX_CHAIN_LEN,
        cache: DeviceChainCache | None = None,
        rims: RimChecker | None = None,
        ocsp: OcspChecker | None = None,
    ) -> None:
        self._rims = rims
        self._ocsp = ocsp
        self._roots = roots or DeviceRoots.default()
        self._max_bytes = max_evidence_bytes
        self._max_devices = max_devices
        self._max_chain = max_chain_len
        self._cache = DeviceChainCache(DEFAULT_CHAIN_CACHE_SIZE) if cache is None else cache

    def verify(self, evidence: Any, expected: VerifyInput) -> list[TeeClaims]:
        devices = parse_device_list(
            evidence, max_bytes=self._max_bytes, max_devices=self._max_devices
        )
        nonce = regularize_nonce(expected.report_data)

        def chain_of(pem: bytes) -> Any:
            return self._cache.verify(pem, self._roots, expected.now, max_len=self._max_chain)

        out: list[TeeClaims] = []
        for device in devices:
            report, chain = verify_device(device, nonce, chain_of)
            # (5)
            measurements, config = report.measurements(), report.config()
            claims: dict[str, Any] = {
                "arch": device.arch,
                "uuid": device.uuid,
                "measurements": measurements,
                "config": config,
            }
            # (6)
            if self._rims is not None:
                claims.update(self._rims.claims(measurements, config, expected.now))
            # (7) Optional OCSP of the device chain: NRAS-named chain claims (upstream's
            # default GPU policy scores them for `hardware`).
            if self._ocsp is not None:
                self._ocsp.check(chain.certs_der, expected.now)
                claims.update(nras_chain_claims())
            insecure = (INSECURE_EMULATED_ROOT,) if chain.emulated else ()
            out.append(TeeClaims(claims=claims, tee_class=device.tee_class, insecure=insecure))
        return out


def nras_chain_claims() -> dict[str, Any]:
    """What NRAS reports for a chain that verified with OCSP ``good``, a matching FWID, a parsed
    report with a verified signature and a supported architecture (all checked above)."""
    return {
        "x-nvidia-gpu-attestation-report-cert-chain": {
            "x-nvidia-cert-status": "valid",
            "x-nvidia-cert-ocsp-status": "good",
        },
        "x-nvidia-gpu-attestation-report-cert-chain-fwid-match": True,
        "x-nvidia-gpu-attestation-report-parsed": True,
        "x-nvidia-gpu-attestation-report-signature-verified": True,
        "x-nvidia-gpu-attestation-report-nonce-match": True,
        "x-nvidia-gpu-arch-check": True,
    }


def create(
    settings: VerifierSettings,
    rims: RimChecker | None = None,
    ocsp: OcspChecker | None = None,
) -> NvidiaVerifier:
    """Factory: NVIDIA's pinned root plus any emulated device roots (warned); ``rims`` from
    the collateral wiring (``collateral.nvidia.rim_checker``) or ``None``."""
    roots = DeviceRoots.default(settings.insecure_emulated_roots)
    if roots.emulated:
        _log.warning(
            "nvidia verifier: %d EMULATED GPU device root(s) trusted (insecure_emulated_roots); "
            "each acceptance is counted as %r",
            len(roots.emulated),
            INSECURE_EMULATED_ROOT,
        )
    opts = dict(settings.extra.get("nvidia", {}))
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ConfigError(
            f"[trustpod.verifier_options.nvidia]: unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join(OPTIONS)}",
            reason="config.verifier_options",
        )
    return NvidiaVerifier(
        roots,
        max_evidence_bytes=settings.max_evidence_bytes,
        max_devices=_positive(opts, "max_devices", DEFAULT_MAX_DEVICES),
        max_chain_len=_positive(opts, "max_chain_len", DEFAULT_MAX_CHAIN_LEN),
        rims=rims,
        ocsp=ocsp,
    )


def _positive(opts: dict[str, Any], key: str, default: int) -> int:
    value = opts.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise ConfigError(
            f"[trustpod.verifier_options.nvidia] {key} must be an integer 1..1024",
            reason="config.verifier_options",
        )
    return value
