"""Intel DCAP quotes v4/v5 carrying a TD report (TDX 1.0 / 1.5), parsed with named offsets.

Layout (Intel TDX DCAP Quoting Library API, appendix A; trustee ``deps/verifier/src/tdx/quote.rs``):

```
v4: header(48) | TD report 1.0 body(584)                     | u32 sig_len | signature data
v5: header(48) | u16 body_type | u32 body_size | body(584|648) | u32 sig_len | signature data
signature data (ECDSA-256): quote sig(64) | attestation key(64) | u16 cert type 6 | u32 size |
    QE report(384) | QE report sig(64) | u16 auth len | QE auth data | u16 type 5 | u32 size | PEM
```

Bytes after the signature data are ignored (real quotes carry zero padding), as upstream does.
All integers are little-endian. Pure: bytes in, frozen dataclasses out, ``EvidenceError`` on any
malformed input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from trustpod.errors import EvidenceError
from trustpod.evidence.intel_pck import PckExtensions, parse_pck_chain

__all__ = [
    "ATT_KEY_ECDSA_P256",
    "BODY_TDX10",
    "BODY_TDX15",
    "MAX_QUOTE_BYTES",
    "TEE_TYPE_TDX",
    "EnclaveReport",
    "QuoteHeader",
    "QuoteSignature",
    "TdQuote",
    "TdReportBody",
    "parse_enclave_report",
    "parse_td_quote",
]

MAX_QUOTE_BYTES = 64 * 1024  #: named limit; real quotes are ~5 KiB
TEE_TYPE_TDX = 0x81
ATT_KEY_ECDSA_P256 = 2
BODY_TDX10 = 2  #: v5 body type for a TDX 1.0 TD report
BODY_TDX15 = 3  #: v5 body type for a TDX 1.5 TD report
CERT_QE_REPORT = 6
CERT_PCK_CHAIN = 5

HEADER_LEN = 48
_H_VERSION, _H_AKT, _H_TEE, _H_RESERVED, _H_VENDOR, _H_USER = 0, 2, 4, 8, 12, 28
V5_DESCRIPTOR_LEN = 6  # u16 body_type + u32 body_size
TD10_LEN = 584
TD15_LEN = 648
# TD report body field -> (offset, length)
TD_FIELDS: dict[str, tuple[int, int]] = {
    "tcb_svn": (0, 16),
    "mr_seam": (16, 48),
    "mrsigner_seam": (64, 48),
    "seam_attributes": (112, 8),
    "td_attributes": (120, 8),
    "xfam": (128, 8),
    "mr_td": (136, 48),
    "mr_config_id": (184, 48),
    "mr_owner": (232, 48),
    "mr_owner_config": (280, 48),
    "rtmr_0": (328, 48),
    "rtmr_1": (376, 48),
    "rtmr_2": (424, 48),
    "rtmr_3": (472, 48),
    "report_data": (520, 64),
}
TD15_FIELDS: dict[str, tuple[int, int]] = {"tee_tcb_svn2": (584, 16), "mr_servicetd": (600, 48)}

ENCLAVE_REPORT_LEN = 384
_E_CPUSVN, _E_MISC, _E_ATTR, _E_MRENCLAVE, _E_MRSIGNER = 0, 16, 48, 64, 128
_E_PRODID, _E_ISVSVN, _E_REPORTDATA = 256, 258, 320
SIG_LEN = 64
ATT_KEY_LEN = 64
_CERT_HDR = struct.Struct("<HI")


def _fail(msg: str) -> EvidenceError:
    return EvidenceError(f"TDX quote: {msg}", reason="tdx.quote_malformed")


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    version: int
    att_key_type: int
    tee_type: int
    raw: bytes  # the 48 header bytes (upstream's claims hex-encode slices of it)

    @property
    def reserved(self) -> bytes:
        return self.raw[_H_RESERVED:_H_VENDOR]

    @property
    def vendor_id(self) -> bytes:
        return self.raw[_H_VENDOR:_H_USER]

    @property
    def user_data(self) -> bytes:
        return self.raw[_H_USER:HEADER_LEN]


@dataclass(frozen=True, slots=True)
class TdReportBody:
    tcb_svn: bytes
    mr_seam: bytes
    mrsigner_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr_0: bytes
    rtmr_1: bytes
    rtmr_2: bytes
    rtmr_3: bytes
    report_data: bytes
    tee_tcb_svn2: bytes | None  # TDX 1.5 only
    mr_servicetd: bytes | None  # TDX 1.5 only

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (self.rtmr_0, self.rtmr_1, self.rtmr_2, self.rtmr_3)


@dataclass(frozen=True, slots=True)
class EnclaveReport:
    """SGX report body (here: the Quoting Enclave's report)."""

    cpu_svn: bytes
    misc_select: int
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes
    raw: bytes


@dataclass(frozen=True, slots=True)
class QuoteSignature:
    signature: bytes  # r||s over header+body, by the attestation key
    attestation_key: bytes  # x||y of a P-256 key
    qe_report: EnclaveReport
    qe_report_signature: bytes  # r||s over qe_report.raw, by the PCK key
    qe_auth_data: bytes
    pck_chain: tuple[bytes, ...]  # DER, leaf first
    pck: PckExtensions


@dataclass(frozen=True, slots=True)
class TdQuote:
    header: QuoteHeader
    body_type: int | None  # v5 only
    body_size: int | None  # v5 only
    body: TdReportBody
    signed: bytes  # header (+ v5 descriptor) + body: the bytes the quote signature covers
    sig: QuoteSignature
    raw: bytes  # the quote up to the end of its signature data (trailing padding dropped)

    @property
    def version(self) -> int:
        return self.header.version


def _u16(buf: bytes, off: int) -> int:
    return int(struct.unpack_from("<H", buf, off)[0])


def _u32(buf: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", buf, off)[0])


def parse_enclave_report(raw: bytes) -> EnclaveReport:
    if len(raw) != ENCLAVE_REPORT_LEN:
        raise _fail(f"enclave report is {len(raw)} bytes, expected {ENCLAVE_REPORT_LEN}")
    return EnclaveReport(
        cpu_svn=raw[_E_CPUSVN:_E_MISC],
        misc_select=_u32(raw, _E_MISC),
        attributes=raw[_E_ATTR:_E_MRENCLAVE],
        mr_enclave=raw[_E_MRENCLAVE : _E_MRENCLAVE + 32],
        mr_signer=raw[_E_MRSIGNER : _E_MRSIGNER + 32],
        isv_prod_id=_u16(raw, _E_PRODID),
        isv_svn=_u16(raw, _E_ISVSVN),
        report_data=raw[_E_REPORTDATA:ENCLAVE_REPORT_LEN],
        raw=bytes(raw),
    )


def _parse_body(raw: bytes, tdx15: bool) -> TdReportBody:
    f = {k: raw[o : o + n] for k, (o, n) in TD_FIELDS.items()}
    x = {k: raw[o : o + n] if tdx15 else None for k, (o, n) in TD15_FIELDS.items()}
    return TdReportBody(
        tcb_svn=f["tcb_svn"],
        mr_seam=f["mr_seam"],
        mrsigner_seam=f["mrsigner_seam"],
        seam_attributes=f["seam_attributes"],
        td_attributes=f["td_attributes"],
        xfam=f["xfam"],
        mr_td=f["mr_td"],
        mr_config_id=f["mr_config_id"],
        mr_owner=f["mr_owner"],
        mr_owner_config=f["mr_owner_config"],
        rtmr_0=f["rtmr_0"],
        rtmr_1=f["rtmr_1"],
        rtmr_2=f["rtmr_2"],
        rtmr_3=f["rtmr_3"],
        report_data=f["report_data"],
        tee_tcb_svn2=x["tee_tcb_svn2"],
        mr_servicetd=x["mr_servicetd"],
    )


def _take(buf: bytes, off: int, n: int, what: str) -> bytes:
    if n < 0 or off + n > len(buf):
        raise _fail(f"{what} truncated (need {n} bytes at offset {off}, have {len(buf)})")
    return buf[off : off + n]


def _parse_signature(sd: bytes) -> QuoteSignature:
    off = 0
    sig = _take(sd, off, SIG_LEN, "quote signature")
    att_key = _take(sd, off + SIG_LEN, ATT_KEY_LEN, "attestation key")
    off += SIG_LEN + ATT_KEY_LEN
    ctype, csize = _CERT_HDR.unpack(_take(sd, off, _CERT_HDR.size, "certification header"))
    off += _CERT_HDR.size
    if ctype != CERT_QE_REPORT:
        raise _fail(f"certification data type {ctype} unsupported (need 6: QE report)")
    cert = _take(sd, off, csize, "QE report certification data")
    qe = parse_enclave_report(_take(cert, 0, ENCLAVE_REPORT_LEN, "QE report"))
    p = ENCLAVE_REPORT_LEN
    qe_sig = _take(cert, p, SIG_LEN, "QE report signature")
    p += SIG_LEN
    auth_len = _u16(_take(cert, p, 2, "QE auth data size"), 0)
    auth = _take(cert, p + 2, auth_len, "QE auth data")
    p += 2 + auth_len
    itype, isize = _CERT_HDR.unpack(_take(cert, p, _CERT_HDR.size, "PCK certification header"))
    if itype != CERT_PCK_CHAIN:
        raise _fail(f"inner certification data type {itype} unsupported (need 5: PCK chain)")
    pem = _take(cert, p + _CERT_HDR.size, isize, "PCK certificate chain")
    chain, pck = parse_pck_chain(pem)
    return QuoteSignature(sig, att_key, qe, qe_sig, auth, chain, pck)


def parse_td_quote(raw: bytes, *, max_bytes: int = MAX_QUOTE_BYTES) -> TdQuote:
    """Parse a TDX DCAP quote (v4, or v5 with body type 2 or 3) or raise ``EvidenceError``."""
    if not isinstance(raw, bytes | bytearray):
        raise _fail("quote must be bytes")
    raw = bytes(raw)
    if len(raw) > max_bytes:
        raise _fail(f"{len(raw)} bytes is over the limit of {max_bytes}")
    hdr = _take(raw, 0, HEADER_LEN, "header")
    version, akt, tee = _u16(hdr, _H_VERSION), _u16(hdr, _H_AKT), _u32(hdr, _H_TEE)
    if tee != TEE_TYPE_TDX:
        raise _fail(f"tee_type {tee:#x} is not TDX ({TEE_TYPE_TDX:#x})")
    if akt != ATT_KEY_ECDSA_P256:
        raise _fail(f"attestation key type {akt} unsupported (need 2: ECDSA-256)")
    body_type: int | None = None
    body_size: int | None = None
    if version == 4:
        body_off, body_len, tdx15 = HEADER_LEN, TD10_LEN, False
    elif version == 5:
        body_type, body_size = struct.unpack(
            "<HI", _take(raw, HEADER_LEN, V5_DESCRIPTOR_LEN, "v5 body descriptor")
        )
        expected = {BODY_TDX10: TD10_LEN, BODY_TDX15: TD15_LEN}.get(body_type)
        if expected is None:
            raise _fail(f"v5 body type {body_type} unsupported (2: TDX 1.0, 3: TDX 1.5)")
        if body_size != expected:
            raise _fail(f"v5 body size {body_size} != {expected} for body type {body_type}")
        body_off, body_len, tdx15 = HEADER_LEN + V5_DESCRIPTOR_LEN, expected, body_type == 3
    else:
        raise _fail(f"version {version} unsupported (4 or 5)")
    body = _parse_body(_take(raw, body_off, body_len, "TD report body"), tdx15)
    end = body_off + body_len
    sig_len = _u32(_take(raw, end, 4, "signature data length"), 0)
    sd = _take(raw, end + 4, sig_len, "signature data")
    return TdQuote(
        header=QuoteHeader(version, akt, tee, hdr),
        body_type=body_type,
        body_size=body_size,
        body=body,
        signed=raw[:end],
        sig=_parse_signature(sd),
        raw=raw[: end + 4 + sig_len],
    )
