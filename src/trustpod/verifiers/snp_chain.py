"""AMD certificate chain ARK -> ASK/ASVK -> VCEK/VLEK: verification, VCEK extensions, cache.

Pure. The result of a chain verification (``VekInfo``) is cached per (VEK, ASK, ARK) DER triple,
so a report signed by a known VCEK costs one P-384 verification (plus a validity-window check
against ``now``, which is never cached).

VCEK extensions (AMD "Versioned Chip Endorsement Key" spec; trustee ``snp/mod.rs``):
``1.3.6.1.4.1.3704.1.3.{1,2,3,8,9}`` = blSPL, teeSPL, snpSPL, ucodeSPL, fmcSPL (DER INTEGER) and
``1.3.6.1.4.1.3704.1.4`` hwID = chip_id, either the raw 64 bytes (KDS certificates) or wrapped in
a DER OCTET STRING (both occur; see trustee's test-vcek-invalid-{legacy,new}.der).
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from trustpod.errors import EvidenceError, TrustpodError, VerificationError
from trustpod.verifiers.roots import AMD_ARK_SHA256, der_fingerprint

__all__ = [
    "DEFAULT_CHAIN_CACHE_SIZE",
    "OID_BL_SPL",
    "OID_FMC_SPL",
    "OID_HWID",
    "OID_SNP_SPL",
    "OID_TEE_SPL",
    "OID_UCODE_SPL",
    "ChainCache",
    "SnpChain",
    "TrustAnchors",
    "VekInfo",
    "common_name",
    "ext_hwid",
    "ext_int",
    "load_cert",
    "verify_chain",
]

_log = logging.getLogger(__name__)

OID_BL_SPL = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.1")
OID_TEE_SPL = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.2")
OID_SNP_SPL = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.3")
OID_UCODE_SPL = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.8")
OID_FMC_SPL = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.9")
OID_HWID = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.4")
HWID_SIZE = 64
DEFAULT_CHAIN_CACHE_SIZE = 1024
MAX_CERT_BYTES = 16 * 1024


def load_cert(der: bytes, what: str) -> x509.Certificate:
    """Parse a DER certificate (AMD roots have serial 0: silence cryptography's warning)."""
    if len(der) > MAX_CERT_BYTES:
        raise EvidenceError(f"{what} certificate is too large", reason="snp.cert_size")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise EvidenceError(f"{what} is not a DER certificate", reason="snp.cert_parse") from exc


def _der_tlv(data: bytes, tag: int, what: str) -> bytes:
    if len(data) < 2 or data[0] != tag:
        raise VerificationError(f"VEK extension {what} is malformed", reason="snp.vek_extension")
    length, pos = data[1], 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 2 or len(data) < 2 + n:
            raise VerificationError(
                f"VEK extension {what} is malformed", reason="snp.vek_extension"
            )
        length, pos = int.from_bytes(data[2 : 2 + n], "big"), 2 + n
    if len(data) != pos + length:
        raise VerificationError(f"VEK extension {what} is malformed", reason="snp.vek_extension")
    return data[pos:]


def _ext_raw(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def ext_int(cert: x509.Certificate, oid: x509.ObjectIdentifier, name: str) -> int | None:
    raw = _ext_raw(cert, oid)
    if raw is None:
        return None
    body = _der_tlv(raw, 0x02, name)
    if not body or len(body) > 2:
        raise VerificationError(f"VEK extension {name} is out of range", reason="snp.vek_extension")
    value = int.from_bytes(body, "big", signed=True)
    if not 0 <= value <= 0xFF:
        raise VerificationError(f"VEK extension {name} is out of range", reason="snp.vek_extension")
    return value


def ext_hwid(cert: x509.Certificate) -> bytes | None:
    raw = _ext_raw(cert, OID_HWID)
    if raw is None or len(raw) == HWID_SIZE:
        return raw
    body = _der_tlv(raw, 0x04, "hwID")  # DER OCTET STRING encoding
    if len(body) != HWID_SIZE:
        raise VerificationError("VCEK hwID is not 64 bytes", reason="snp.vek_extension")
    return body


@dataclass(frozen=True, slots=True)
class SnpChain:
    """The three DER certificates a report is checked against."""

    vek: bytes
    ask: bytes
    ark: bytes


@dataclass(frozen=True, slots=True)
class TrustAnchors:
    """Accepted ARKs: SHA-256 of DER -> product line (``None``: any product)."""

    arks: tuple[tuple[str, str | None], ...]
    emulated: frozenset[str] = frozenset()

    def product_of(self, fingerprint: str) -> tuple[bool, str | None]:
        """(pinned?, product) for an ARK fingerprint."""
        for fp, product in self.arks:
            if fp == fingerprint:
                return True, product
        return False, None

    @classmethod
    def default(cls, insecure_emulated: tuple[bytes, ...] = ()) -> TrustAnchors:
        arks: dict[str, str | None] = {fp: p for p, fp in AMD_ARK_SHA256.items()}
        emulated = set()
        for der in insecure_emulated:
            cert = load_cert(der, "insecure emulated root")
            if cert.issuer != cert.subject:
                continue  # an intermediate (ASK) given alongside the emulated ARK
            fp = der_fingerprint(der)
            cn = common_name(cert)
            arks[fp] = cn[4:] if cn.startswith("ARK-") else None
            emulated.add(fp)
        return cls(tuple(sorted(arks.items(), key=lambda kv: kv[0])), frozenset(emulated))


@dataclass(frozen=True, slots=True)
class VekInfo:
    """What a verified chain tells about its VEK."""

    product: str | None
    kind: str  # "VCEK" | "VLEK"
    public_key: ec.EllipticCurvePublicKey
    bootloader: int | None
    tee: int | None
    snp: int | None
    microcode: int | None
    fmc: int | None
    hwid: bytes | None
    not_before: _dt.datetime
    not_after: _dt.datetime
    emulated: bool


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else ""


def _check_issued(
    child: x509.Certificate, issuer: x509.Certificate, reason: str, what: str
) -> None:
    try:
        child.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise VerificationError(f"{what}: {exc or 'invalid signature'}", reason=reason) from exc


def verify_chain(chain: SnpChain, anchors: TrustAnchors) -> VekInfo:
    """Check ARK pinning and the signatures ARK->ARK, ARK->ASK, ASK->VEK; read the VEK."""
    # (3) ARK pinned by the SHA-256 of its DER (upstream: compare with the bundled ARK).
    ark_fp = der_fingerprint(chain.ark)
    pinned, product = anchors.product_of(ark_fp)
    if not pinned:
        raise VerificationError(
            f"ARK {ark_fp[:16]}... is not a pinned AMD root",
            reason="snp.ark_not_pinned",
            fix="use AMD's ARK (see trustpod.verifiers.roots) or insecure_emulated_roots for tests",
        )
    ark, ask, vek = (
        load_cert(chain.ark, "ARK"),
        load_cert(chain.ask, "ASK"),
        load_cert(chain.vek, "VEK"),
    )
    _check_issued(ark, ark, "snp.ark_signature", "ARK is not self-signed")  # (4)
    _check_issued(ask, ark, "snp.ask_signature", "ASK/ASVK is not signed by the ARK")  # (5)
    _check_issued(vek, ask, "snp.vek_signature", "VCEK/VLEK is not signed by the ASK/ASVK")  # (6)
    key = vek.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise VerificationError("VEK key is not ECDSA P-384", reason="snp.vek_key")
    cn = common_name(vek)
    kind = "VLEK" if "VLEK" in cn else "VCEK"
    certs = (ark, ask, vek)
    return VekInfo(
        product=product,
        kind=kind,
        public_key=key,
        bootloader=ext_int(vek, OID_BL_SPL, "blSPL"),
        tee=ext_int(vek, OID_TEE_SPL, "teeSPL"),
        snp=ext_int(vek, OID_SNP_SPL, "snpSPL"),
        microcode=ext_int(vek, OID_UCODE_SPL, "ucodeSPL"),
        fmc=ext_int(vek, OID_FMC_SPL, "fmcSPL"),
        hwid=ext_hwid(vek) if kind == "VCEK" else None,
        not_before=max(c.not_valid_before_utc for c in certs),
        not_after=min(c.not_valid_after_utc for c in certs),
        emulated=ark_fp in anchors.emulated,
    )


class ChainCache:
    """Bounded LRU of verified chains keyed by (chain DERs, trust anchors), and of refused ones:
    ``verify_chain`` depends only on the DERs and the anchors (validity at ``now`` is checked by
    the caller), so a chain that failed fails again the same way. The negative entries matter
    when a verifier tries several CA sets (real AMD roots, then emulated ones) on every report."""

    def __init__(self, max_entries: int = DEFAULT_CHAIN_CACHE_SIZE) -> None:
        self._max = max_entries
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[SnpChain, TrustAnchors], VekInfo] = OrderedDict()
        self._refused: OrderedDict[tuple[SnpChain, TrustAnchors], TrustpodError] = OrderedDict()

    def verify(self, chain: SnpChain, anchors: TrustAnchors) -> VekInfo:
        key = (chain, anchors)
        with self._lock:
            info = self._items.get(key)
            if info is not None:
                self._items.move_to_end(key)
                return info
            refused = self._refused.get(key)
        if refused is not None:
            raise type(refused)(refused.message, reason=refused.reason, fix=refused.fix)
        try:
            info = verify_chain(chain, anchors)  # outside the lock: RSA verifies take ms
        except (VerificationError, EvidenceError) as exc:
            with self._lock:
                self._refused[key] = exc
                while len(self._refused) > self._max:
                    self._refused.popitem(last=False)
            raise
        with self._lock:
            self._items[key] = info
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        return info

    def __len__(self) -> int:
        return len(self._items)
