"""Persistent AMD collateral store (offline store and cache in one directory).

Layout (the VCEK part is upstream's ``OfflineStore``, so an existing kds-store works as is)::

    <dir>/vcek/<hwid>/<bl.._tee.._snp.._ucode..[_fmc..]>_vcek.der   per TCB
    <dir>/vcek/<hwid>/vcek.der                                      fallback (upstream too)
    <dir>/amd/<Product>/ark.der | ask.der | asvk.der                vendor CA certificates

An ARK is only ever read or written when its SHA-256 fingerprint is pinned
(``trustpod.verifiers.roots``); an ASK/ASVK only when the pinned ARK signed it. Writes are atomic
(temporary file + rename).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from trustpod.collateral.ports import AmdCaCerts, AmdTcb, kds_hwid, tcb_store_prefix
from trustpod.errors import EvidenceError, NotFoundError, VerificationError
from trustpod.verifiers.roots import AMD_ARK_SHA256, AMD_PRODUCTS, der_fingerprint
from trustpod.verifiers.snp_chain import (
    OID_BL_SPL,
    OID_FMC_SPL,
    OID_SNP_SPL,
    OID_TEE_SPL,
    OID_UCODE_SPL,
    common_name,
    ext_hwid,
    ext_int,
    load_cert,
)

__all__ = ["CA_KINDS", "FileCache", "check_ca_cert", "vcek_tcb_and_hwid"]

_log = logging.getLogger(__name__)
CA_KINDS = ("ark", "ask", "asvk")
_HWID = re.compile(r"^(?:[0-9a-f]{16}|[0-9a-f]{128})$")
MAX_FILE_BYTES = 64 * 1024


def _check_product(product: str) -> None:
    if product not in AMD_PRODUCTS:
        raise EvidenceError(
            f"unknown AMD product line {product!r} (one of {', '.join(AMD_PRODUCTS)})",
            reason="collateral.product",
        )


def _check_hwid(hwid: str) -> str:
    hwid = hwid.lower()
    if not _HWID.match(hwid):
        raise EvidenceError(
            "hwid must be 128 hex digits (chip_id), or 16 on Turin", reason="collateral.hwid"
        )
    return hwid


def check_ca_cert(product: str, kind: str, der: bytes, ark_der: bytes | None) -> None:
    """Refuse an ARK that is not pinned, and an ASK/ASVK the pinned ARK did not sign."""
    _check_product(product)
    if kind == "ark":
        if der_fingerprint(der) != AMD_ARK_SHA256[product]:
            raise VerificationError(
                f"ARK for {product} does not match the pinned fingerprint",
                reason="collateral.root_not_pinned",
                fix="use AMD's certificate from https://kdsintf.amd.com/vcek/v1/<product>/cert_chain",
            )
        return
    if kind not in CA_KINDS:
        raise EvidenceError(f"unknown certificate kind {kind!r}", reason="collateral.kind")
    if ark_der is None:
        raise NotFoundError(
            f"import the {product} ARK before its {kind.upper()}", reason="collateral.ark_missing"
        )
    try:
        load_cert(der, kind).verify_directly_issued_by(load_cert(ark_der, "ARK"))
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise VerificationError(
            f"{kind.upper()} is not signed by the pinned {product} ARK",
            reason="collateral.ca_signature",
        ) from exc


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> bytes | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise EvidenceError(f"{path} is too large", reason="collateral.size")
        return path.read_bytes()
    except FileNotFoundError:
        return None


class FileCache:
    """The collateral directory; implements ``VcekSource`` and ``RootSource``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FileCache({str(self.root)!r})"

    # ------------------------------------------------------------------ VCEKs
    def vcek_path(self, hwid: str, tcb: AmdTcb | None) -> Path:
        name = "vcek.der" if tcb is None else f"{tcb_store_prefix(tcb)}_vcek.der"
        return self.root / "vcek" / _check_hwid(hwid) / name

    def get_vcek(self, product: str, hwid: str, tcb: AmdTcb) -> bytes:
        for path in (self.vcek_path(hwid, tcb), self.vcek_path(hwid, None)):
            data = _read(path)
            if data is not None:
                return data
        raise NotFoundError(
            f"no VCEK in {self.root} for hwid {hwid[:16]}... {tcb_store_prefix(tcb)}",
            reason="collateral.vcek_missing",
        )

    def put_vcek(self, hwid: str, tcb: AmdTcb, der: bytes) -> Path:
        load_cert(der, "VCEK")
        path = self.vcek_path(hwid, tcb)
        _atomic_write(path, der)
        return path

    # ------------------------------------------------------------------ CA certificates
    def ca_path(self, product: str, kind: str) -> Path:
        _check_product(product)
        if kind not in CA_KINDS:
            raise EvidenceError(f"unknown certificate kind {kind!r}", reason="collateral.kind")
        return self.root / "amd" / product / f"{kind}.der"

    def get_ca_certs(self, product: str) -> AmdCaCerts:
        found = {kind: _read(self.ca_path(product, kind)) for kind in CA_KINDS}
        ark = found["ark"]
        if ark is not None:
            check_ca_cert(product, "ark", ark, None)  # a tampered store fails closed
        return AmdCaCerts(ark=ark, ask=found["ask"], asvk=found["asvk"])

    def put_ca(self, product: str, kind: str, der: bytes) -> Path:
        ark = der if kind == "ark" else self.get_ca_certs(product).ark
        check_ca_cert(product, kind, der, ark)
        path = self.ca_path(product, kind)
        _atomic_write(path, der)
        return path

    def import_cert(self, cert: x509.Certificate, der: bytes) -> Path:
        """Store a certificate where it belongs, from its subject/issuer and extensions."""
        cn = common_name(cert)
        for prefix, kind in (("ARK-", "ark"), ("SEV-VLEK-", "asvk"), ("SEV-", "ask")):
            if cn.startswith(prefix) and cn[len(prefix) :] in AMD_PRODUCTS:
                return self.put_ca(cn[len(prefix) :], kind, der)
        if cn in ("VCEK", "SEV-VCEK"):
            issuer = cert.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            product = str(issuer[0].value).removeprefix("SEV-") if issuer else ""
            _check_product(product)
            tcb, hwid = vcek_tcb_and_hwid(cert)
            return self.put_vcek(kds_hwid(product, hwid), tcb, der)
        raise EvidenceError(
            f"not an AMD ARK/ASK/ASVK/VCEK certificate (CN={cn!r})", reason="collateral.kind"
        )


def vcek_tcb_and_hwid(cert: x509.Certificate) -> tuple[AmdTcb, bytes]:
    """TCB and hwID from a VCEK's AMD extensions."""
    values = [
        ext_int(cert, oid, name)
        for oid, name in (
            (OID_BL_SPL, "blSPL"),
            (OID_TEE_SPL, "teeSPL"),
            (OID_SNP_SPL, "snpSPL"),
            (OID_UCODE_SPL, "ucodeSPL"),
        )
    ]
    hwid = ext_hwid(cert)
    if any(v is None for v in values) or hwid is None:
        raise EvidenceError("VCEK lacks the AMD TCB/hwID extensions", reason="collateral.vcek")
    bl, tee, snp, ucode = (int(v or 0) for v in values)
    return AmdTcb(bl, tee, snp, ucode, ext_int(cert, OID_FMC_SPL, "fmcSPL")), hwid
