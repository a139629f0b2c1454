"""The ``az-tdx-vtpm`` verifier: Azure TDX CVM evidence (vTPM quote + HCL + TD quote), §5.3. Pure.

Steps (upstream ``az_tdx_vtpm/mod.rs``): (1) TPM quote signed by the HCL's AK (RSA, SHA-256);
(2) TPM ``extraData`` == report_data, exact; (3) SHA-256 of the PCRs == quote ``pcrDigest``;
(4) SHA-256(HCL var_data) == TD quote report_data[0..32]; (5) v2: ``user-data`` starts with the
report_data; (6) TD quote DCAP-verified as for ``tdx``; (7) initdata: PCR8 == SHA256(0^32||d).
Cheap binding checks (4, 5) run before DCAP so that forged HCL data fails fast.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from trustpod.errors import VerificationError
from trustpod.evidence.az_tdx import AzTdxEvidence, TpmQuote, parse_az_tdx_evidence
from trustpod.evidence.tdx import parse_td_quote
from trustpod.initdata import pcr8_after_extend
from trustpod.verifiers.base import TeeClaims, VerifierSettings, VerifyInput
from trustpod.verifiers.intel_dcap import DcapOptions
from trustpod.verifiers.tdx import (
    IntelCollateralSource,
    collateral_source,
    dcap_options,
    tdx_quote_claims,
    verify_td_quote,
)

__all__ = ["INITDATA_PCR", "AzTdxVtpmVerifier", "create", "tpm_claims"]

INITDATA_PCR = 8
_TPM_ALG_SHA256 = 0x000B


def _err(step: str, msg: str, fix: str | None = None) -> VerificationError:
    return VerificationError(f"az-tdx-vtpm: {msg}", reason=f"az_tdx_vtpm.{step}", fix=fix)


def _selected_pcrs(quote: TpmQuote) -> bytes:
    out = b""
    for alg, bitmap in quote.message.pcr_selection:
        if alg != _TPM_ALG_SHA256:
            raise _err("pcr_digest", f"quote selects PCR bank {alg:#x}, only SHA-256 is supported")
        for i in range(len(bitmap) * 8):
            if bitmap[i // 8] >> (i % 8) & 1:
                if i >= len(quote.pcrs):
                    raise _err("pcr_digest", f"quote selects PCR {i} which is not supplied")
                out += quote.pcrs[i]
    return out


def verify_tpm_quote(ev: AzTdxEvidence, report_data: bytes) -> None:
    quote = ev.tpm_quote
    # (1) TPM quote signature by the HCL AK (RSASSA-PKCS1-v1_5, SHA-256).
    try:
        ev.hcl.ak_pub.verify(
            quote.signature, quote.message.raw, padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature as exc:
        raise _err("tpm_signature", "TPM quote is not signed by the HCL attestation key") from exc
    # (2) nonce == report_data, exact (§1.5).
    if not hmac.compare_digest(quote.message.extra_data, report_data):
        raise _err("report_data", "TPM quote nonce does not match the expected report data")
    # (3) PCR values match the signed digest.
    if hashlib.sha256(_selected_pcrs(quote)).digest() != quote.message.pcr_digest:
        raise _err("pcr_digest", "digest of the PCR values does not match the TPM quote")


def tpm_claims(quote: TpmQuote) -> dict[str, Any]:
    """Upstream ``extend_claim``: ``tpm.pcrNN``, ``init_data`` = PCR8, ``report_data`` = nonce."""
    return {
        "tpm": {f"pcr{i:02d}": pcr.hex() for i, pcr in enumerate(quote.pcrs)},
        "init_data": quote.pcrs[INITDATA_PCR].hex(),
        "report_data": quote.message.extra_data.hex(),
    }


@dataclass(slots=True)
class AzTdxVtpmVerifier:
    source: IntelCollateralSource | None
    options: DcapOptions
    max_evidence_bytes: int = 2 * 1024 * 1024
    tee: str = "az-tdx-vtpm"

    def verify(self, evidence: Any, expected: VerifyInput) -> list[TeeClaims]:
        ev = parse_az_tdx_evidence(evidence, self.max_evidence_bytes)
        verify_tpm_quote(ev, expected.report_data)
        td_quote = parse_td_quote(ev.td_quote)
        # (4) SHA-256(var_data) == TD quote report_data[0..32].
        if hashlib.sha256(ev.hcl.var_data).digest() != td_quote.body.report_data[:32]:
            raise _err("var_data", "TD quote report_data does not bind the HCL var_data")
        # (5) evidence v2: HCL user-data starts with the report_data.
        if ev.version == 2:
            user = ev.hcl.user_data or b""
            if not hmac.compare_digest(user[: len(expected.report_data)], expected.report_data):
                raise _err("user_data", "HCL user-data does not start with the report data")
        # (6) the TD quote is genuine (DCAP, as for `tdx`).
        collateral_claims = verify_td_quote(td_quote, self.source, expected.now, self.options)
        # (7) initdata bound into PCR8.
        if expected.init_data_digest is not None:
            digest = expected.init_data_digest
            if len(digest) != 32:
                raise _err(
                    "init_data_digest_size",
                    f"initdata digest is {len(digest)} bytes; vTPM PCR8 binding needs sha256",
                    fix='use algorithm = "sha256" in the initdata document',
                )
            if ev.tpm_quote.pcrs[INITDATA_PCR] != pcr8_after_extend(digest):
                raise _err("init_data", "PCR8 does not match the initdata digest")
        claims = tdx_quote_claims(td_quote)
        claims.update(tpm_claims(ev.tpm_quote))
        claims.update(collateral_claims)
        return [TeeClaims(claims, "cpu")]


def create(settings: VerifierSettings) -> AzTdxVtpmVerifier:
    return AzTdxVtpmVerifier(
        source=collateral_source(settings),
        options=dcap_options(settings, "az-tdx-vtpm"),
        max_evidence_bytes=settings.max_evidence_bytes,
    )
