"""Every collateral port in one module: AMD (VCEK/VLEK and vendor CA certificates), Intel (TDX
collateral by FMSPC), the HTTP GET the vendor-service clients use; plus in-memory adapters.

Pure: no I/O here. The file caches (``collateral.cache``, ``collateral.intel``), the KDS client
(``collateral.amd``) and the PCS client (``collateral.intel_pcs``) implement these protocols;
verifiers depend only on the protocols.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from trustpod.errors import NotFoundError

if TYPE_CHECKING:
    from trustpod.verifiers.intel_collateral import IntelCollateral

__all__ = [
    "AmdCaCerts",
    "AmdTcb",
    "HttpGet",
    "IntelCollateralSource",
    "MemoryAmdCollateral",
    "RootSource",
    "VcekSource",
    "kds_hwid",
    "tcb_store_prefix",
]


@dataclass(frozen=True, slots=True)
class AmdTcb:
    """The reported TCB a VCEK is issued for (KDS query parameters)."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None


@dataclass(frozen=True, slots=True)
class AmdCaCerts:
    """Vendor CA certificates (DER) of one product line. Any may be absent."""

    ark: bytes | None = None
    ask: bytes | None = None
    asvk: bytes | None = None


def kds_hwid(product: str, chip_id: bytes) -> str:
    """The hwID as KDS and the offline store key it: hex chip_id (first 8 bytes on Turin)."""
    return (chip_id[:8] if product == "Turin" else chip_id).hex()


def tcb_store_prefix(tcb: AmdTcb) -> str:
    """``bl02_tee00_snp06_ucode21[_fmc05]`` (upstream offline store file prefix)."""
    text = f"bl{tcb.bootloader:02d}_tee{tcb.tee:02d}_snp{tcb.snp:02d}_ucode{tcb.microcode:02d}"
    if tcb.fmc is not None:
        text += f"_fmc{tcb.fmc:02d}"
    return text


class VcekSource(Protocol):
    """Where VCEKs come from (offline store, KDS, cache in front of KDS)."""

    def get_vcek(self, product: str, hwid: str, tcb: AmdTcb) -> bytes:
        """DER VCEK for ``hwid`` at ``tcb``; raise ``NotFoundError``/``DependencyError``."""
        ...


class RootSource(Protocol):
    """Where the AMD CA certificates come from. Callers check fingerprints/signatures."""

    def get_ca_certs(self, product: str) -> AmdCaCerts:
        """ARK/ASK/ASVK (DER) for ``product``; absent ones are ``None``."""
        ...


@dataclass
class MemoryAmdCollateral:
    """In-memory VCEKs and CA certificates (tests, CLI ``--insecure-emulated-root``)."""

    ca: dict[str, AmdCaCerts] = field(default_factory=dict)
    vceks: dict[tuple[str, str], bytes] = field(default_factory=dict)

    @classmethod
    def from_ca(cls, ca: Mapping[str, AmdCaCerts]) -> MemoryAmdCollateral:
        return cls(ca=dict(ca))

    def add_vcek(self, hwid: str, tcb: AmdTcb, der: bytes) -> None:
        self.vceks[(hwid, tcb_store_prefix(tcb))] = der

    def get_vcek(self, product: str, hwid: str, tcb: AmdTcb) -> bytes:
        try:
            return self.vceks[(hwid, tcb_store_prefix(tcb))]
        except KeyError:
            raise NotFoundError(
                f"no VCEK for hwid {hwid[:16]}... at {tcb_store_prefix(tcb)}",
                reason="collateral.vcek_missing",
            ) from None

    def get_ca_certs(self, product: str) -> AmdCaCerts:
        return self.ca.get(product, AmdCaCerts())


class IntelCollateralSource(Protocol):
    """Port: Intel collateral for one platform (FMSPC hex, CA ``platform``/``processor``)."""

    def get_tdx(self, fmspc: str, ca: str) -> IntelCollateral: ...


class HttpGet(Protocol):
    """Port: one HTTP GET -> (status, headers, body); raises ``DependencyError`` on I/O errors."""

    def get(self, url: str) -> tuple[int, Mapping[str, str], bytes]: ...
