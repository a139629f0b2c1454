"""Azure confidential VM (SEV-SNP) vTPM verifier, ``az-snp-vtpm`` (protocol notes §5.3).

trustee ``deps/verifier/src/az_snp_vtpm/mod.rs`` steps:

1. TPM quote signed by the AK from the HCL var_data (RSA, SHA-256),
2. quote ``extraData`` == report_data (exact),
3. SHA-256(PCRs) == quote ``pcrDigest``,
4. SHA-256(HCL var_data) == SNP report_data[0..32],
5. evidence v2: HCL ``user-data`` starts with report_data,
6. the SNP report is genuine: VCEK chain to the pinned ARK, report signature, VCEK TCB and hwID,
   VMPL 0,
7. initdata: PCR8 == SHA-256(0^32 || digest).

Claims use az-snp-vtpm's encodings (strings, base64), then ``tpm.pcrNN`` (hex),
``init_data`` = PCR8 hex and ``report_data`` = quote nonce hex.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from trustpod.errors import EvidenceError
from trustpod.evidence.az import AzEvidence
from trustpod.evidence.hcl import HclReport
from trustpod.evidence.snp import SnpReport
from trustpod.verifiers.az_common import (
    INITDATA_PCR,
    check_hcl_report_data,
    check_init_data_pcr8,
    check_user_data,
    pcr_claims,
    verify_vtpm_quote,
)
from trustpod.verifiers.base import TeeClaims, VerifierSettings, VerifyInput
from trustpod.verifiers.snp import (
    INSECURE_EMULATED_ROOT,
    SnpVerifier,
    check_product_and_validity,
    verify_report,
)

__all__ = ["AzSnpVtpmVerifier", "az_snp_claims", "create"]


def az_snp_claims(report: SnpReport) -> dict[str, Any]:
    """trustee ``parse_tee_evidence_az``: every value a string, byte fields base64 std."""
    pol, plat, tcb = report.policy_bits, report.platform_bits, report.reported_tcb

    def s(value: object) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return {
        "policy_abi_major": s(pol.abi_major),
        "policy_abi_minor": s(pol.abi_minor),
        "policy_smt_allowed": s(pol.smt_allowed),
        "policy_migrate_ma": s(pol.migrate_ma_allowed),
        "policy_debug_allowed": s(pol.debug_allowed),
        "policy_single_socket": s(pol.single_socket_required),
        "reported_tcb_bootloader": s(tcb.bootloader),
        "reported_tcb_tee": s(tcb.tee),
        "reported_tcb_snp": s(tcb.snp),
        "reported_tcb_microcode": s(tcb.microcode),
        "platform_tsme_enabled": s(plat.tsme_enabled),
        "platform_smt_enabled": s(plat.smt_enabled),
        "measurement": b64(report.measurement),
        "report_data": b64(report.report_data),
        "init_data": b64(report.host_data),
    }


class AzSnpVtpmVerifier:
    """``az-snp-vtpm``: vTPM quote + HCL report + SNP report (VCEK in the evidence)."""

    tee = "az-snp-vtpm"

    def __init__(self, snp: SnpVerifier) -> None:
        self.snp = snp

    def verify(self, evidence: Any, expected: VerifyInput) -> list[TeeClaims]:
        ev = AzEvidence.from_json(evidence, tee=self.tee)
        if not ev.vcek:  # absent or empty: malformed evidence, not missing collateral
            raise EvidenceError("az-snp-vtpm evidence has no VCEK", reason="az.json")
        hcl = HclReport.from_bytes(ev.hcl_report)
        quote = ev.tpm_quote
        attest = verify_vtpm_quote(  # (1)-(3)
            message=quote.message,
            signature=quote.signature,
            pcrs=quote.pcrs,
            ak=hcl.ak_public_key(),
            expected_nonce=expected.report_data,
        )
        report = hcl.snp_report()
        check_hcl_report_data(hcl, report.report_data)  # (4)
        if ev.version >= 2:
            check_user_data(hcl, expected.report_data)  # (5)
        # (6) SNP report genuine: chain (cached per VCEK), product, validity, signature, TCB.
        chain = self.snp.chain_for(report, None, vek=ev.vcek)
        vek = self.snp.cache.verify(chain, self.snp.anchors)
        check_product_and_validity(report, vek, expected)
        verify_report(report, vek, allowed_vmpls=self.snp.allowed_vmpls)
        check_init_data_pcr8(quote.pcrs, expected.init_data_digest)  # (7)
        claims = az_snp_claims(report)
        claims["tpm"] = pcr_claims(quote.pcrs)
        if len(quote.pcrs) > INITDATA_PCR:
            claims["init_data"] = quote.pcrs[INITDATA_PCR].hex()
        claims["report_data"] = attest.extra_data.hex()
        insecure = (INSECURE_EMULATED_ROOT,) if vek.emulated else ()
        return [TeeClaims(claims, "cpu", insecure=insecure)]


def create(settings: VerifierSettings, sources: Sequence[Any] = ()) -> AzSnpVtpmVerifier:
    """Build the verifier; collateral ``sources`` come from ``trustpod.collateral.wiring``."""
    snp = SnpVerifier(
        vcek_sources=list(sources),
        root_sources=list(sources),
        allowed_vmpls=settings.allowed_vmpls,
        insecure_emulated_roots=settings.insecure_emulated_roots,
    )
    return AzSnpVtpmVerifier(snp)
