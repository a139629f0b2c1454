"""Intel PCK certificate chain and its SGX extensions (OID 1.2.840.113741.1.13.1.*), pure.

The SGX extension is a DER ``SEQUENCE OF SEQUENCE { OID, value }`` (Intel SGX PCK Certificate and
CRL Profile): ``.1`` PPID, ``.2`` TCB (``.2.1``-``.2.16`` component SVNs, ``.2.17`` PCESVN,
``.2.18`` CPUSVN), ``.3`` PCE-ID, ``.4`` FMSPC, ``.5`` SGX type, ``.6`` platform instance id
(Platform CA only), ``.7`` configuration (``.7.1`` dynamic platform, ``.7.2`` cached keys,
``.7.3`` SMT enabled). ``cryptography`` hands the extension over as raw bytes; the few DER
primitives needed here are read by a 40-line reader with strict bounds (see ADR 0500).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding

from trustpod.errors import EvidenceError

__all__ = [
    "SGX_EXTENSION_OID",
    "PckExtensions",
    "parse_pck_chain",
    "parse_pck_extensions",
    "touch_certificate",
]

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
MAX_CHAIN_CERTS = 4
_PFX = SGX_EXTENSION_OID + "."


def _fail(msg: str) -> EvidenceError:
    return EvidenceError(f"PCK certificate: {msg}", reason="tdx.pck_malformed")


@dataclass(frozen=True, slots=True)
class PckExtensions:
    ppid: bytes
    tcb_components: tuple[int, ...]  # 16 SGX TCB component SVNs
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int  # 0 Standard, 1 Scalable, 2 Scalable with Integrity
    platform_instance_id: bytes | None
    dynamic_platform: bool | None
    cached_keys: bool | None
    smt_enabled: bool | None
    ca: str  # "platform" | "processor" (from the issuer CN)


def _tlv(buf: bytes, off: int) -> tuple[int, bytes, int]:
    """Read one DER TLV at ``off``: (tag, value, next offset)."""
    if off + 2 > len(buf):
        raise _fail("DER truncated")
    tag, first = buf[off], buf[off + 1]
    off += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 3 or off + n > len(buf):
            raise _fail("DER length invalid")
        length = int.from_bytes(buf[off : off + n], "big")
        off += n
    if off + length > len(buf):
        raise _fail("DER value truncated")
    return tag, buf[off : off + length], off + length


def _oid(raw: bytes) -> str:
    if not raw:
        raise _fail("empty OID")
    parts = [raw[0] // 40, raw[0] % 40]
    val = 0
    for b in raw[1:]:
        val = (val << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(val)
            val = 0
    return ".".join(map(str, parts))


def _walk(seq: bytes, out: dict[str, tuple[int, bytes]], depth: int = 0) -> None:
    """Flatten ``SEQUENCE OF SEQUENCE {OID, value}`` recursively into ``oid -> (tag, value)``."""
    if depth > 3:
        raise _fail("SGX extension nested too deeply")
    off = 0
    while off < len(seq):
        tag, item, off = _tlv(seq, off)
        if tag != 0x30:
            raise _fail("SGX extension entry is not a SEQUENCE")
        otag, oid_raw, p = _tlv(item, 0)
        if otag != 0x06:
            raise _fail("SGX extension entry has no OID")
        vtag, value, _ = _tlv(item, p)
        oid = _oid(oid_raw)
        out[oid] = (vtag, value)
        if vtag == 0x30:
            _walk(value, out, depth + 1)


def parse_pck_extensions(cert: x509.Certificate) -> PckExtensions:
    """Extract the SGX extension values from a PCK leaf certificate."""
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    except x509.ExtensionNotFound as exc:
        raise _fail("no SGX extension (not a PCK certificate)") from exc
    raw = ext.value.public_bytes()
    tag, body, _ = _tlv(raw, 0)
    if tag != 0x30:
        raise _fail("SGX extension is not a SEQUENCE")
    vals: dict[str, tuple[int, bytes]] = {}
    _walk(body, vals)

    def get(sub: str, tags: tuple[int, ...]) -> bytes:
        try:
            t, v = vals[_PFX + sub]
        except KeyError:
            raise _fail(f"SGX extension {_PFX + sub} missing") from None
        if t not in tags:
            raise _fail(f"SGX extension {_PFX + sub} has DER tag {t:#x}")
        return v

    def num(sub: str) -> int:
        return int.from_bytes(get(sub, (0x02, 0x0A)), "big")

    def opt_bool(sub: str) -> bool | None:
        return get(sub, (0x01,)) != b"\x00" if _PFX + sub in vals else None

    issuer = cert.issuer.rfc4514_string()
    ca = "processor" if "Processor" in issuer else "platform" if "Platform" in issuer else ""
    if not ca:
        raise _fail(f"issuer {issuer!r} is neither the Platform nor the Processor CA")
    pii = get("6", (0x04,)) if _PFX + "6" in vals else None
    return PckExtensions(
        ppid=get("1", (0x04,)),
        tcb_components=tuple(num(f"2.{i}") for i in range(1, 17)),
        pce_svn=num("2.17"),
        cpu_svn=get("2.18", (0x04,)),
        pce_id=get("3", (0x04,)),
        fmspc=get("4", (0x04,)),
        sgx_type=num("5"),
        platform_instance_id=pii,
        dynamic_platform=opt_bool("7.1"),
        cached_keys=opt_bool("7.2"),
        smt_enabled=opt_bool("7.3"),
        ca=ca,
    )


def touch_certificate(cert: x509.Certificate) -> None:
    """Force ``cryptography``'s lazy parsing now, so malformed fields fail at parse time."""
    cert.subject.rfc4514_string()
    cert.issuer.rfc4514_string()
    _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.serial_number)
    _ = (cert.extensions, cert.public_key(), cert.signature_hash_algorithm)


def parse_pck_chain(pem: bytes) -> tuple[tuple[bytes, ...], PckExtensions]:
    """PEM chain (leaf first; trailing NULs tolerated) -> (DER certs, leaf SGX extensions)."""
    try:
        certs = x509.load_pem_x509_certificates(pem.rstrip(b"\x00"))
    except ValueError as exc:
        raise _fail(f"chain is not PEM certificates: {exc}") from exc
    if not 2 <= len(certs) <= MAX_CHAIN_CERTS:
        raise _fail(f"chain has {len(certs)} certificates (expected 2..{MAX_CHAIN_CERTS})")
    try:
        for cert in certs:
            touch_certificate(cert)
        pck = parse_pck_extensions(certs[0])
        der = tuple(c.public_bytes(Encoding.DER) for c in certs)
    except (ValueError, UnsupportedAlgorithm, x509.UnsupportedGeneralNameType) as exc:
        raise _fail(f"leaf certificate is malformed: {exc}") from exc
    return der, pck
