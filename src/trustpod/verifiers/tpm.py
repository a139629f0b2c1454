"""Generic TPM verifier, ``tpm`` (trustee ``deps/verifier/src/tpm/mod.rs``; notes §5.4).

Evidence::

    {"ak_public": "<b64 std DER SubjectPublicKeyInfo>",
     "tpm_quote": {"message": b64(TPMS_ATTEST), "signature": b64(TPMT_SIGNATURE),
                   "pcrs": ["<64 hex>", ...]}}

Steps: (1) quote signature by ``ak_public`` (upstream: RSASSA only; we also accept RSAPSS and
ECDSA TPMT_SIGNATUREs), (2) SHA-256(PCRs) == pcrDigest, (3) nonce == expected report_data
resized to 32 bytes (the 48-byte SHA-384 runtime digest is truncated, as upstream),
(4) initdata: PCR8 == SHA-256(0^32 || digest). The AK is NOT trusted here: the attestation
policy must check ``ak_public`` against the reference values (``trusted_aks``).

Claims: ``init_data`` (PCR8 hex), ``report_data`` (nonce hex), ``ak_public`` (input b64),
``pcr00``..``pcrNN`` (hex).
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from trustpod._internal.b64 import b64_decode
from trustpod.errors import EvidenceError
from trustpod.evidence.tpm import TpmtSignature
from trustpod.initdata import fit
from trustpod.verifiers.az_common import (
    INITDATA_PCR,
    check_init_data_pcr8,
    pcr_claims,
    verify_vtpm_quote,
)
from trustpod.verifiers.base import TeeClaims, VerifierSettings, VerifyInput

__all__ = ["TPM_REPORT_DATA_SIZE", "TpmEvidence", "TpmVerifier", "create"]

TPM_REPORT_DATA_SIZE = 32
MAX_FIELD_CHARS = 64 * 1024
MAX_PCRS = 24


class TpmEvidence:
    """Parsed ``tpm`` evidence."""

    __slots__ = ("ak", "ak_public", "message", "pcrs", "signature")

    def __init__(self, obj: Any) -> None:
        if not isinstance(obj, dict) or not isinstance(obj.get("tpm_quote"), dict):
            raise EvidenceError("tpm evidence must have ak_public and tpm_quote", reason="tpm.json")
        quote = obj["tpm_quote"]
        ak_public = obj.get("ak_public")
        fields = (ak_public, quote.get("message"), quote.get("signature"))
        if not all(isinstance(f, str) and len(f) <= MAX_FIELD_CHARS for f in fields):
            raise EvidenceError("tpm evidence fields must be base64 strings", reason="tpm.json")
        assert isinstance(ak_public, str)
        self.ak_public = ak_public
        try:
            key = load_der_public_key(b64_decode(ak_public, field="ak_public"))
        except (ValueError, TypeError) as exc:
            raise EvidenceError("Failed to parse AK public key", reason="tpm.ak_public") from exc
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise EvidenceError("AK must be an RSA or EC key", reason="tpm.ak_public")
        self.ak: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = key
        self.message = b64_decode(quote["message"], field="tpm_quote.message")
        self.signature = TpmtSignature.from_bytes(
            b64_decode(quote["signature"], field="tpm_quote.signature")
        )
        pcrs = quote.get("pcrs")
        if not isinstance(pcrs, list) or len(pcrs) > MAX_PCRS:
            raise EvidenceError(f"tpm_quote.pcrs must be at most {MAX_PCRS}", reason="tpm.json")
        values = []
        for i, pcr in enumerate(pcrs):
            if not isinstance(pcr, str) or len(pcr) != 64:
                raise EvidenceError(f"PCR {i} should be 64 hex characters", reason="tpm.pcr")
            try:
                values.append(bytes.fromhex(pcr))
            except ValueError as exc:
                raise EvidenceError(f"PCR {i} is not hex", reason="tpm.pcr") from exc
        self.pcrs = tuple(values)


class TpmVerifier:
    """``tpm``: AK-signed quote over SHA-256 PCRs; the AK is judged by the policy."""

    tee = "tpm"

    def verify(self, evidence: Any, expected: VerifyInput) -> list[TeeClaims]:
        ev = TpmEvidence(evidence)
        attest = verify_vtpm_quote(  # (1)-(3)
            message=ev.message,
            signature=ev.signature,
            pcrs=ev.pcrs,
            ak=ev.ak,
            expected_nonce=fit(expected.report_data, TPM_REPORT_DATA_SIZE),
        )
        check_init_data_pcr8(ev.pcrs, expected.init_data_digest)  # (4)
        claims: dict[str, Any] = {
            "init_data": ev.pcrs[INITDATA_PCR].hex() if len(ev.pcrs) > INITDATA_PCR else "",
            "report_data": attest.extra_data.hex(),
            "ak_public": ev.ak_public,
        }
        claims.update(pcr_claims(ev.pcrs))
        return [TeeClaims(claims, "cpu")]


def create(settings: VerifierSettings) -> TpmVerifier:
    return TpmVerifier()
