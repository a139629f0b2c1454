"""Azure TDX CVM evidence: HCL report with a TD report, TPM quote (TPMS_ATTEST), formats v0-v2.

Private to the az-tdx-vtpm verifier (H4's generic ``evidence.hcl``/``evidence.tpm`` did not exist
when this was written; see the H5 report). Pure.

HCL report (2600 bytes, ``az-tdx-vtpm`` crate ``hcl.rs``)::

    0x000 header: "HCLA" | u32 version | u32 report_size | u32 request_type | u32 status | 12 rsvd
    0x020 hardware report (1184 bytes; TDX: TDREPORT 1024 = REPORTMACSTRUCT 256 | TEE_TCB_INFO |
          TDINFO; REPORTMACSTRUCT: u8 type 0x81 ... report_data at +0x80 (64))
    0x4C0 runtime header: u32 data_size | u32 version | u32 report_type (2 SNP, 4 TDX) |
          u32 hash_type (1 SHA-256) | u32 var_data_size
    0x4D4 var_data: JSON {"keys": [{"kid": "HCLAkPub", "kty": "RSA", "n", "e"}, ...],
          "user-data": "<hex>", ...}

TPMS_ATTEST (TPM 2.0 Part 2 §10.12.12, big-endian): magic 0xFF544347 | type 0x8018 (quote) |
TPM2B qualifiedSigner | TPM2B extraData | clockInfo(17) | u64 firmwareVersion |
TPML_PCR_SELECTION | TPM2B pcrDigest.
"""

from __future__ import annotations

import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from trustpod._internal.b64 import b64url_decode
from trustpod.errors import EvidenceError

__all__ = [
    "HCL_REPORT_LEN",
    "AzTdxEvidence",
    "HclTdReport",
    "TpmAttest",
    "TpmQuote",
    "parse_az_tdx_evidence",
    "parse_hcl_tdx",
    "parse_tpms_attest",
]

HCL_REPORT_LEN = 2600
_HCL_MAGIC = b"HCLA"
_HW_REPORT_OFF, _HW_REPORT_LEN = 0x20, 1184
_TD_REPORT_LEN = 1024
_TD_REPORT_TYPE_OFF, _TD_REPORT_DATA_OFF = 0x00, 0x80
_RUNTIME_OFF = _HW_REPORT_OFF + _HW_REPORT_LEN  # 0x4C0
_RT_REPORT_TYPE_OFF, _RT_VAR_SIZE_OFF, _VAR_DATA_OFF = 0x4C8, 0x4D0, 0x4D4
_REPORT_TYPE_TDX = 4
_TPM_MAGIC, _TPM_ST_ATTEST_QUOTE = 0xFF544347, 0x8018
_PCR_COUNT, _PCR_LEN = 24, 32
MAX_TPM_MESSAGE = 4096


def _fail(msg: str, reason: str = "az_tdx_vtpm.evidence_malformed") -> EvidenceError:
    return EvidenceError(f"az-tdx-vtpm: {msg}", reason=reason)


@dataclass(frozen=True, slots=True)
class HclTdReport:
    raw: bytes
    td_report: bytes  # 1024-byte TDREPORT
    td_report_data: bytes  # REPORTMACSTRUCT.report_data (64)
    var_data: bytes  # exact bytes hashed into report_data[0..32]
    ak_pub: rsa.RSAPublicKey
    user_data: bytes | None


@dataclass(frozen=True, slots=True)
class TpmAttest:
    raw: bytes
    qualified_signer: bytes
    extra_data: bytes  # the nonce (= report_data)
    pcr_selection: tuple[tuple[int, bytes], ...]  # (hash alg, select bitmap)
    pcr_digest: bytes


@dataclass(frozen=True, slots=True)
class TpmQuote:
    signature: bytes  # raw RSASSA-PKCS1-v1_5 signature over the TPMS_ATTEST
    message: TpmAttest
    pcrs: tuple[bytes, ...]  # SHA-256 PCR values 0..23


@dataclass(frozen=True, slots=True)
class AzTdxEvidence:
    version: int  # 0 (byte arrays), 1, 2
    tpm_quote: TpmQuote
    hcl: HclTdReport
    td_quote: bytes


def _rsa_from_jwk(jwk: Any) -> rsa.RSAPublicKey:
    if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
        raise _fail("HCLAkPub is not an RSA JWK")
    try:
        n = int.from_bytes(b64url_decode(str(jwk["n"]), field="n"), "big")
        e = int.from_bytes(b64url_decode(str(jwk["e"]), field="e"), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    except (KeyError, ValueError) as exc:
        raise _fail("HCLAkPub has no valid n/e") from exc


def parse_hcl_tdx(raw: bytes) -> HclTdReport:
    """Parse a TDX HCL report; the AK is the ``HCLAkPub`` key of var_data."""
    if len(raw) != HCL_REPORT_LEN or raw[:4] != _HCL_MAGIC:
        raise _fail(f"HCL report must be {HCL_REPORT_LEN} bytes starting with HCLA")
    (rtype,) = struct.unpack_from("<I", raw, _RT_REPORT_TYPE_OFF)
    if rtype != _REPORT_TYPE_TDX:
        raise _fail(f"HCL report type {rtype} is not TDX ({_REPORT_TYPE_TDX})")
    (var_size,) = struct.unpack_from("<I", raw, _RT_VAR_SIZE_OFF)
    if _VAR_DATA_OFF + var_size > len(raw):
        raise _fail("HCL var_data size runs past the report")
    var_data = raw[_VAR_DATA_OFF : _VAR_DATA_OFF + var_size]
    try:
        doc = json.loads(var_data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail("HCL var_data is not JSON") from exc
    keys = doc.get("keys") if isinstance(doc, dict) else None
    ak = next((k for k in keys or [] if isinstance(k, dict) and k.get("kid") == "HCLAkPub"), None)
    if ak is None:
        raise _fail("HCL var_data has no HCLAkPub key")
    user_hex = doc.get("user-data")
    try:
        user = bytes.fromhex(user_hex) if isinstance(user_hex, str) else None
    except ValueError as exc:
        raise _fail("HCL user-data is not hex") from exc
    td = raw[_HW_REPORT_OFF : _HW_REPORT_OFF + _TD_REPORT_LEN]
    return HclTdReport(
        raw=raw,
        td_report=td,
        td_report_data=td[_TD_REPORT_DATA_OFF : _TD_REPORT_DATA_OFF + 64],
        var_data=var_data,
        ak_pub=_rsa_from_jwk(ak),
        user_data=user,
    )


def parse_tpms_attest(raw: bytes) -> TpmAttest:
    if len(raw) > MAX_TPM_MESSAGE:
        raise _fail("TPM quote message too large")
    try:
        magic, st = struct.unpack_from(">IH", raw, 0)
        if magic != _TPM_MAGIC or st != _TPM_ST_ATTEST_QUOTE:
            raise _fail("TPM message is not a TPMS_ATTEST quote")
        off = 6
        (n,) = struct.unpack_from(">H", raw, off)
        signer = raw[off + 2 : off + 2 + n]
        off += 2 + n
        (n,) = struct.unpack_from(">H", raw, off)
        extra = raw[off + 2 : off + 2 + n]
        off += 2 + n + 17 + 8  # clockInfo + firmwareVersion
        (count,) = struct.unpack_from(">I", raw, off)
        off += 4
        if count > 8:
            raise _fail("TPM quote selects too many PCR banks")
        sel = []
        for _ in range(count):
            alg, size = struct.unpack_from(">HB", raw, off)
            sel.append((alg, raw[off + 3 : off + 3 + size]))
            off += 3 + size
        (n,) = struct.unpack_from(">H", raw, off)
        digest = raw[off + 2 : off + 2 + n]
        if len(digest) != n or off + 2 + n != len(raw):
            raise _fail("TPMS_ATTEST length mismatch")
    except struct.error as exc:
        raise _fail("TPMS_ATTEST truncated") from exc
    return TpmAttest(raw, signer, extra, tuple(sel), digest)


def _bytes_field(value: Any, what: str, version: int) -> bytes:
    try:
        if version == 0:
            if not isinstance(value, list) or not all(isinstance(b, int) for b in value):
                raise _fail(f"{what} must be a byte array in v0 evidence")
            return bytes(value)
        if what in ("hcl_report", "td_quote"):
            return b64url_decode(str(value), field=what)
        return bytes.fromhex(str(value))
    except (ValueError, binascii.Error) as exc:
        raise _fail(f"{what} is malformed") from exc


def parse_az_tdx_evidence(evidence: Any, max_bytes: int = 1 << 20) -> AzTdxEvidence:
    """Upstream's v0 (bincode-style byte arrays), v1 and v2 JSON shapes."""
    if not isinstance(evidence, dict):
        raise _fail("evidence must be a JSON object")
    version = evidence.get("version", 0)
    if version not in (0, 1, 2) or isinstance(version, bool):
        raise _fail(f"evidence version {version!r} unsupported (0, 1, 2)")
    tq = evidence.get("tpm_quote")
    if not isinstance(tq, dict) or not isinstance(tq.get("pcrs"), list):
        raise _fail("tpm_quote must be an object with pcrs")
    if len(json.dumps(evidence)) > 4 * max_bytes:
        raise _fail("evidence too large")
    pcrs = tuple(_bytes_field(p, "pcr", version) for p in tq["pcrs"])
    if len(pcrs) != _PCR_COUNT or any(len(p) != _PCR_LEN for p in pcrs):
        raise _fail(f"tpm_quote.pcrs must be {_PCR_COUNT} SHA-256 values")
    quote = TpmQuote(
        signature=_bytes_field(tq.get("signature"), "signature", version),
        message=parse_tpms_attest(_bytes_field(tq.get("message"), "message", version)),
        pcrs=pcrs,
    )
    hcl = parse_hcl_tdx(_bytes_field(evidence.get("hcl_report"), "hcl_report", version))
    td_quote = _bytes_field(evidence.get("td_quote"), "td_quote", version)
    return AzTdxEvidence(version, quote, hcl, td_quote)
