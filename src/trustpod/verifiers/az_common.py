"""Checks shared by the Azure vTPM verifiers (``az-snp-vtpm``, ``az-tdx-vtpm``) and ``tpm``.

trustee ``deps/verifier/src/az_snp_vtpm/mod.rs`` steps, numbered as there:

1. the TPM quote is signed by the AK (RSASSA-PKCS1-v1_5 / SHA-256 for Azure's AK),
2. TPMS_ATTEST ``extraData`` == report_data (exact for az-*; ``tpm`` resizes to 32 first),
3. SHA-256(concatenated PCR values) == the quote's ``pcrDigest``,
4. SHA-256(HCL var_data) == hardware report_data[0..32],
5. (evidence v2) the HCL ``user-data`` starts with report_data,
8. initdata: PCR8 == SHA-256(0^32 || digest).

Pure functions; each failed check raises ``VerificationError`` with a stable ``reason``.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from trustpod.errors import VerificationError
from trustpod.evidence.hcl import HclReport
from trustpod.evidence.tpm import (
    ALG_ECDSA,
    ALG_RSAPSS,
    ALG_SHA256,
    ALG_SHA384,
    ALG_SHA512,
    TpmsAttest,
    TpmtSignature,
    pcr_digest,
)
from trustpod.initdata import pcr8_after_extend

__all__ = [
    "INITDATA_PCR",
    "check_hcl_report_data",
    "check_init_data_pcr8",
    "check_user_data",
    "pcr_claims",
    "verify_quote_signature",
    "verify_vtpm_quote",
]

INITDATA_PCR = 8
_HASHES: dict[int, hashes.HashAlgorithm] = {
    ALG_SHA256: hashes.SHA256(),
    ALG_SHA384: hashes.SHA384(),
    ALG_SHA512: hashes.SHA512(),
}


def verify_quote_signature(
    message: bytes,
    signature: bytes | TpmtSignature,
    ak: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
) -> None:
    """(1) ``signature`` (raw RSASSA bytes, or a TPMT_SIGNATURE) over ``message`` by ``ak``."""
    try:
        if isinstance(signature, bytes):
            if not isinstance(ak, rsa.RSAPublicKey):
                raise VerificationError("AK is not an RSA key", reason="vtpm.ak_key")
            ak.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            return
        algorithm = _HASHES.get(signature.hash_alg)
        if algorithm is None:
            raise VerificationError("unsupported quote hash", reason="vtpm.quote_signature")
        if signature.sig_alg == ALG_ECDSA:
            if not isinstance(ak, ec.EllipticCurvePublicKey):
                raise VerificationError("AK is not an EC key", reason="vtpm.ak_key")
            ak.verify(signature.ecdsa_der(), message, ec.ECDSA(algorithm))
            return
        if not isinstance(ak, rsa.RSAPublicKey):
            raise VerificationError("AK is not an RSA key", reason="vtpm.ak_key")
        pad: padding.AsymmetricPadding = (
            padding.PSS(padding.MGF1(algorithm), padding.PSS.AUTO)
            if signature.sig_alg == ALG_RSAPSS
            else padding.PKCS1v15()
        )
        ak.verify(signature.signature, message, pad, algorithm)
    except (InvalidSignature, ValueError) as exc:
        raise VerificationError(
            "TPM quote is not signed by the AK", reason="vtpm.quote_signature"
        ) from exc


def verify_vtpm_quote(
    *,
    message: bytes,
    signature: bytes | TpmtSignature,
    pcrs: Sequence[bytes],
    ak: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    expected_nonce: bytes,
) -> TpmsAttest:
    """Steps 1-3: AK signature, ``extraData == expected_nonce`` (exact), PCR digest.

    ``pcrs`` must be the SHA-256 bank values of PCR 0..n-1, the quote selecting exactly those.
    Returns the parsed TPMS_ATTEST.
    """
    verify_quote_signature(message, signature, ak)  # (1)
    attest = TpmsAttest.from_bytes(message)
    if not hmac.compare_digest(attest.extra_data, expected_nonce):  # (2)
        raise VerificationError(
            "TPM quote nonce doesn't match expected report_data", reason="vtpm.nonce"
        )
    if pcr_digest(pcrs) != attest.pcr_digest:  # (3)
        raise VerificationError(
            "Digest of PCRs does not match digest in Quote", reason="vtpm.pcr_digest"
        )
    selected = [(b.hash_alg, i) for b in attest.pcr_select for i in b.pcrs]
    if selected != [(ALG_SHA256, i) for i in range(len(pcrs))]:
        raise VerificationError(
            "the quote does not select exactly SHA-256 PCRs 0..n-1 matching the PCR list",
            reason="vtpm.pcr_selection",
        )
    return attest


def check_hcl_report_data(hcl: HclReport, hw_report_data: bytes) -> None:
    """(4) SHA-256(HCL var_data) == hardware report_data[0..32]."""
    if not hmac.compare_digest(hcl.var_data_sha256(), hw_report_data[:32]):
        raise VerificationError(
            "HCL variable data digest doesn't match the hardware report_data",
            reason="vtpm.var_data_hash",
        )


def check_user_data(hcl: HclReport, report_data: bytes) -> None:
    """(5) evidence v2: HCL ``user-data`` starts with report_data."""
    user_data = hcl.user_data()
    if len(user_data) < len(report_data) or not hmac.compare_digest(
        user_data[: len(report_data)], report_data
    ):
        raise VerificationError(
            "User-data in HCL variable data doesn't match report_data", reason="vtpm.user_data"
        )


def check_init_data_pcr8(pcrs: Sequence[bytes], digest: bytes | None) -> None:
    """(8) PCR8 == SHA-256(0^32 || digest); a non-32-byte digest is a clear error."""
    if digest is None:
        return
    expected = pcr8_after_extend(digest)  # raises initdata.pcr8_digest_size
    if len(pcrs) <= INITDATA_PCR or not hmac.compare_digest(pcrs[INITDATA_PCR], expected):
        raise VerificationError(
            "Expected init_data digest is different from the content of PCR8",
            reason="vtpm.init_data",
        )


def pcr_claims(pcrs: Sequence[bytes]) -> dict[str, Any]:
    """``{"pcr00": hex, ...}`` (trustee ``extend_claim``)."""
    return {f"pcr{i:02d}": value.hex() for i, value in enumerate(pcrs)}
