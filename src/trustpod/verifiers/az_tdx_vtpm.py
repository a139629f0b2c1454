"""The ``az-tdx-vtpm`` verifier: Azure TDX CVM evidence (vTPM quote + HCL + TD quote), §5.3. Pure.

Steps (upstream ``az_tdx_vtpm/mod.rs``; the vTPM/HCL checks are the shared ones in
``trustpod.verifiers.az_common``): (1) TPM quote signed by the HCL's AK; (2) TPM ``extraData``
== report_data, exact; (3) SHA-256 of the PCRs == quote ``pcrDigest``; (4) SHA-256(HCL
var_data) == TD quote report_data[0..32]; (5) v2: ``user-data`` starts with the report_data;
(6) the TD quote is DCAP-verified as for ``tdx``; (7) initdata: PCR8 == SHA256(0^32||digest).
The cheap binding checks (4, 5) run before DCAP so that forged HCL data fails fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trustpod.errors import EvidenceError
from trustpod.evidence.az import AzEvidence
from trustpod.evidence.hcl import HclReport
from trustpod.evidence.tdx import parse_td_quote
from trustpod.verifiers.az_common import (
    INITDATA_PCR,
    check_hcl_report_data,
    check_init_data_pcr8,
    check_user_data,
    pcr_claims,
    verify_vtpm_quote,
)
from trustpod.verifiers.base import TeeClaims, VerifierSettings, VerifyInput
from trustpod.verifiers.intel_dcap import DcapOptions
from trustpod.verifiers.tdx import (
    IntelCollateralSource,
    dcap_options,
    tdx_quote_claims,
    verify_td_quote,
)

__all__ = ["TEE", "AzTdxVtpmVerifier", "create"]

TEE = "az-tdx-vtpm"


@dataclass(slots=True)
class AzTdxVtpmVerifier:
    source: IntelCollateralSource | None
    options: DcapOptions
    tee: str = TEE

    def verify(self, evidence: Any, expected: VerifyInput) -> list[TeeClaims]:
        ev = AzEvidence.from_json(evidence, tee=TEE)
        if ev.td_quote is None:  # pragma: no cover - from_json always sets it for TDX
            raise EvidenceError("az-tdx-vtpm evidence has no td_quote", reason="az.json")
        hcl = HclReport.from_bytes(ev.hcl_report)
        if hcl.is_snp:
            raise EvidenceError("HCL report carries an SNP report, not a TD report",
                                reason="hcl.report_type")  # fmt: skip
        # (1)-(3) AK signature, nonce == report_data (exact), PCR digest.
        attest = verify_vtpm_quote(
            message=ev.tpm_quote.message,
            signature=ev.tpm_quote.signature,
            pcrs=ev.tpm_quote.pcrs,
            ak=hcl.ak_public_key(),
            expected_nonce=expected.report_data,
        )
        td_quote = parse_td_quote(ev.td_quote)
        # (4) SHA-256(var_data) == TD quote report_data[0..32].
        check_hcl_report_data(hcl, td_quote.body.report_data)
        # (5) evidence v2: HCL user-data starts with the report_data.
        if ev.version >= 2:
            check_user_data(hcl, expected.report_data)
        # (6) the TD quote is genuine (DCAP, as for `tdx`).
        collateral_claims = verify_td_quote(td_quote, self.source, expected.now, self.options)
        # (7) initdata bound into PCR8 (a non-32-byte digest is a clear error).
        check_init_data_pcr8(ev.tpm_quote.pcrs, expected.init_data_digest)
        # Claims: TDX layout (no event logs) + upstream ``extend_claim`` + collateral claims.
        claims = tdx_quote_claims(td_quote)
        claims["tpm"] = pcr_claims(ev.tpm_quote.pcrs)
        if len(ev.tpm_quote.pcrs) > INITDATA_PCR:
            claims["init_data"] = ev.tpm_quote.pcrs[INITDATA_PCR].hex()
        claims["report_data"] = attest.extra_data.hex()
        claims.update(collateral_claims)
        return [TeeClaims(claims, "cpu")]


def create(
    settings: VerifierSettings, source: IntelCollateralSource | None = None
) -> AzTdxVtpmVerifier:
    """Build the verifier; the collateral ``source`` comes from ``trustpod.collateral.wiring``."""
    return AzTdxVtpmVerifier(source=source, options=dcap_options(settings, TEE))
