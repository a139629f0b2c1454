"""AMD's public CA certificates shipped in the package (``collateral/roots/*.pem``).

Upstream's verifier embeds ``{milan,genoa,turin}_ask_ark_asvk.pem`` (ASK, ARK, ASVK of each
product line) so SNP evidence that carries its own VCEK (Azure's az-snp-vtpm evidence, extended
reports) verifies with no collateral step. trustpod does the same: ``BundledAmdRoots`` is the
last root source of every SNP verifier, after the collateral directory and KDS.

Each file is checked when first read, and every certificate in it must be exactly the pinned
one (``trustpod.verifiers.roots``: SHA-256 of the DER) for its product and kind; anything else
— a missing, extra, edited or swapped certificate — raises ``collateral.bundled_root`` instead
of silently trusting it. VCEKs are never shipped (``get_vcek`` always says not found).
"""

from __future__ import annotations

import threading
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustpod.collateral.ports import AmdCaCerts, AmdTcb
from trustpod.errors import EvidenceError, NotFoundError
from trustpod.verifiers.roots import (
    AMD_ARK_SHA256,
    AMD_ASK_SHA256,
    AMD_ASVK_SHA256,
    AMD_PRODUCTS,
    der_fingerprint,
)

__all__ = ["BUNDLED_ROOTS_DIR", "BundledAmdRoots", "bundled_pem_name", "load_bundled"]

#: package directory (under ``trustpod.collateral``) holding AMD's PEM bundles
BUNDLED_ROOTS_DIR = "roots"

_PINNED = {"ark": AMD_ARK_SHA256, "ask": AMD_ASK_SHA256, "asvk": AMD_ASVK_SHA256}


def bundled_pem_name(product: str) -> str:
    """``milan_ask_ark_asvk.pem`` for ``Milan`` (upstream's file names)."""
    return f"{product.lower()}_ask_ark_asvk.pem"


def _kind(cert: x509.Certificate, product: str) -> str | None:
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else ""
    return {f"ARK-{product}": "ark", f"SEV-{product}": "ask", f"SEV-VLEK-{product}": "asvk"}.get(cn)


def load_bundled(product: str, pem: bytes) -> AmdCaCerts:
    """Parse one bundled PEM file and check every certificate against its pin."""
    if product not in AMD_PRODUCTS:
        raise NotFoundError(f"no bundled AMD roots for {product!r}", reason="collateral.product")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise EvidenceError(
            f"bundled {bundled_pem_name(product)} is not a PEM certificate bundle",
            reason="collateral.bundled_root",
        ) from exc
    found: dict[str, bytes] = {}
    for cert in certs:
        kind = _kind(cert, product)
        der = cert.public_bytes(Encoding.DER)
        if kind is None or kind in found or der_fingerprint(der) != _PINNED[kind][product]:
            raise EvidenceError(
                f"bundled {bundled_pem_name(product)} holds a certificate that is not AMD's "
                f"pinned {product} ARK/ASK/ASVK ({cert.subject.rfc4514_string()})",
                reason="collateral.bundled_root",
                fix="reinstall trustpod; the package data was changed",
            )
        found[kind] = der
    if set(found) != set(_PINNED):
        raise EvidenceError(
            f"bundled {bundled_pem_name(product)} lacks {sorted(set(_PINNED) - set(found))}",
            reason="collateral.bundled_root",
            fix="reinstall trustpod; the package data was changed",
        )
    return AmdCaCerts(ark=found["ark"], ask=found["ask"], asvk=found["asvk"])


class BundledAmdRoots:
    """Root source over the shipped PEMs (read and checked once per product, thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ca: dict[str, AmdCaCerts] = {}

    def __repr__(self) -> str:
        return "BundledAmdRoots()"

    def get_ca_certs(self, product: str) -> AmdCaCerts:
        with self._lock:
            ca = self._ca.get(product)
            if ca is None:
                if product not in AMD_PRODUCTS:
                    raise NotFoundError(
                        f"no bundled AMD roots for {product!r}", reason="collateral.product"
                    )
                ref = resources.files("trustpod.collateral") / BUNDLED_ROOTS_DIR
                pem = (ref / bundled_pem_name(product)).read_bytes()
                ca = self._ca[product] = load_bundled(product, pem)
            return ca

    def get_vcek(self, product: str, hwid: str, tcb: AmdTcb) -> bytes:
        raise NotFoundError(
            "VCEKs are not shipped (only AMD's ARK/ASK/ASVK)", reason="collateral.vcek_missing"
        )
