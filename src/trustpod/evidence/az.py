"""Azure confidential VM evidence (``az-snp-vtpm`` / ``az-tdx-vtpm``), formats v0, v1 and v2.

Formats (trustee ``deps/verifier/src/az_{snp,tdx}_vtpm/compat.rs``)::

    v2/v1: {"version": 2|1, "tpm_quote": {"signature": hex, "message": hex, "pcrs": [hex, ...]},
            "hcl_report": b64url(padded), "vcek": b64url(DER)}            (SNP)
            ... "td_quote": b64url}                                     (TDX)
    v0 SNP: {"quote": {"signature": [u8], "message": [u8], "pcrs": [[u8; 32], ...]},
             "report": [u8], "vcek": "<PEM>"}
    v0 TDX: {"tpm_quote": {byte arrays as above}, "hcl_report": [u8], "td_quote": [u8]}

``signature`` is the raw RSASSA-PKCS1-v1_5 signature by the AK (not a TPMT_SIGNATURE);
``message`` is the TPMS_ATTEST. v2 differs from v1 only in that the HCL ``user-data`` starts with
the report_data. Pure: JSON values in, frozen dataclasses out.
"""

from __future__ import annotations

import base64
import warnings
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustpod._internal.b64 import b64url_decode
from trustpod.errors import EvidenceError

__all__ = ["MAX_AZ_BLOB_BYTES", "AzEvidence", "AzTpmQuote"]

MAX_AZ_BLOB_BYTES = 64 * 1024  #: per decoded blob (HCL 2600, TD quote ~5 KiB, VCEK ~1.4 KiB)
MAX_PCRS = 24


def _hex(value: Any, field: str) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * MAX_AZ_BLOB_BYTES:
        raise EvidenceError(f"{field} must be a hex string", reason="az.json")
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise EvidenceError(f"{field} is not valid hex", reason="az.json") from exc


def _u8_array(value: Any, field: str) -> bytes:
    if not isinstance(value, list) or len(value) > MAX_AZ_BLOB_BYTES:
        raise EvidenceError(f"{field} must be an array of bytes", reason="az.json")
    try:
        return bytes(value)
    except (TypeError, ValueError) as exc:
        raise EvidenceError(f"{field} must contain integers 0..255", reason="az.json") from exc


def _b64url(value: Any, field: str) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * MAX_AZ_BLOB_BYTES:
        raise EvidenceError(f"{field} must be a base64url string", reason="az.json")
    if not value:
        # Azure's attester always fills these; an empty one is malformed, not "absent".
        raise EvidenceError(f"{field} is empty", reason="az.json")
    return b64url_decode(value, field=field)


def _b64url_padded(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


@dataclass(frozen=True, slots=True)
class AzTpmQuote:
    """The vTPM quote parts: RSA signature, TPMS_ATTEST message, SHA-256 PCR values."""

    signature: bytes
    message: bytes
    pcrs: tuple[bytes, ...]

    @classmethod
    def from_json(cls, obj: Any, *, legacy: bool) -> AzTpmQuote:
        if not isinstance(obj, dict):
            raise EvidenceError("tpm_quote must be an object", reason="az.json")
        conv = _u8_array if legacy else _hex
        pcrs = obj.get("pcrs")
        if not isinstance(pcrs, list) or len(pcrs) > MAX_PCRS:
            raise EvidenceError(
                f"tpm_quote.pcrs must be at most {MAX_PCRS} values", reason="az.json"
            )
        values = tuple(conv(p, f"tpm_quote.pcrs[{i}]") for i, p in enumerate(pcrs))
        if any(len(v) != 32 for v in values):
            raise EvidenceError("Invalid PCR length, expected 32 bytes", reason="az.pcr_size")
        return cls(
            signature=conv(obj.get("signature"), "tpm_quote.signature"),
            message=conv(obj.get("message"), "tpm_quote.message"),
            pcrs=values,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "signature": self.signature.hex(),
            "message": self.message.hex(),
            "pcrs": [p.hex() for p in self.pcrs],
        }


@dataclass(frozen=True, slots=True)
class AzEvidence:
    """Azure vTPM evidence of either platform. ``vcek`` (DER) is SNP-only, ``td_quote`` TDX-only."""

    version: int
    tpm_quote: AzTpmQuote
    hcl_report: bytes
    vcek: bytes | None = None
    td_quote: bytes | None = None

    @classmethod
    def from_json(cls, obj: Any, *, tee: str = "az-snp-vtpm") -> AzEvidence:
        """Parse evidence for ``tee`` (``az-snp-vtpm`` or ``az-tdx-vtpm``), any format version."""
        if not isinstance(obj, dict):
            raise EvidenceError(f"{tee} evidence must be a JSON object", reason="az.json")
        snp = tee == "az-snp-vtpm"
        version = obj.get("version")
        if version is None:
            return cls._v0(obj, snp)
        if isinstance(version, bool) or version not in (1, 2):
            raise EvidenceError(
                f"unsupported {tee} evidence version {version!r}", reason="az.version"
            )
        quote = AzTpmQuote.from_json(obj.get("tpm_quote"), legacy=False)
        hcl = _b64url(obj.get("hcl_report"), "hcl_report")
        if snp:
            return cls(version, quote, hcl, vcek=_b64url(obj.get("vcek"), "vcek"))
        return cls(version, quote, hcl, td_quote=_b64url(obj.get("td_quote"), "td_quote"))

    @classmethod
    def _v0(cls, obj: dict[str, Any], snp: bool) -> AzEvidence:
        if snp:
            quote = AzTpmQuote.from_json(obj.get("quote"), legacy=True)
            pem = obj.get("vcek")
            if not isinstance(pem, str) or len(pem) > MAX_AZ_BLOB_BYTES:
                raise EvidenceError("vcek must be a PEM string", reason="az.json")
            try:
                with warnings.catch_warnings():  # AMD certificates have serial number 0
                    warnings.simplefilter("ignore")
                    cert = x509.load_pem_x509_certificate(pem.encode())
                der = cert.public_bytes(Encoding.DER)
            except (ValueError, UnicodeEncodeError) as exc:
                raise EvidenceError("Invalid VCEK PEM", reason="az.vcek") from exc
            return cls(0, quote, _u8_array(obj.get("report"), "report"), vcek=der)
        quote = AzTpmQuote.from_json(obj.get("tpm_quote"), legacy=True)
        return cls(
            0,
            quote,
            _u8_array(obj.get("hcl_report"), "hcl_report"),
            td_quote=_u8_array(obj.get("td_quote"), "td_quote"),
        )

    def to_json(self) -> dict[str, Any]:
        """Serialise in format v2 (or v1 when ``version`` is 1); v0 is read-only."""
        if self.version not in (1, 2):
            raise EvidenceError("only evidence formats v1/v2 are written", reason="az.version")
        out: dict[str, Any] = {
            "version": self.version,
            "tpm_quote": self.tpm_quote.to_json(),
            "hcl_report": _b64url_padded(self.hcl_report),
        }
        if self.vcek is not None:
            out["vcek"] = _b64url_padded(self.vcek)
        if self.td_quote is not None:
            out["td_quote"] = _b64url_padded(self.td_quote)
        return out
