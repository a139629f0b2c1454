"""Small value types of the SNP report: TCB_VERSION, GUEST_POLICY and PLATFORM_INFO bits.

Bit positions from the SEV-SNP firmware ABI spec (virtee ``sev`` crate ``GuestPolicy``,
``PlatformInfo``, ``TcbVersion``). Re-exported by ``trustpod.evidence.snp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trustpod.errors import EvidenceError

__all__ = ["LEGACY_TCB_POS", "TURIN_TCB_POS", "SnpPlatformInfo", "SnpPolicy", "SnpTcb"]

TURIN_TCB_POS = (0, 1, 2, 3, 7)  # fmc, bootloader, tee, snp, microcode
LEGACY_TCB_POS = (0, 1, 6, 7)  # bootloader, tee, snp, microcode


@dataclass(frozen=True, slots=True)
class SnpTcb:
    """A TCB_VERSION; ``fmc`` is ``None`` outside Turin (sev crate ``TcbVersion``)."""

    bootloader: int = 0
    tee: int = 0
    snp: int = 0
    microcode: int = 0
    fmc: int | None = None

    @classmethod
    def decode(cls, raw: bytes, *, turin: bool) -> SnpTcb:
        if turin:
            return cls(bootloader=raw[1], tee=raw[2], snp=raw[3], microcode=raw[7], fmc=raw[0])
        return cls(bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7])

    def encode(self, *, turin: bool, base: bytes = bytes(8)) -> bytes:
        """The 8 TCB bytes; reserved positions are taken from ``base`` (kept when re-encoding)."""
        out = bytearray(base)
        positions = TURIN_TCB_POS if turin else LEGACY_TCB_POS
        values = (self.fmc or 0, self.bootloader, self.tee, self.snp, self.microcode)
        for pos, value in zip(positions, values if turin else values[1:], strict=True):
            out[pos] = value
        return bytes(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "fmc": self.fmc,
            "bootloader": self.bootloader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }

    @classmethod
    def from_json(cls, obj: Any, field: str) -> SnpTcb:
        if not isinstance(obj, dict):
            raise EvidenceError(f"{field} is not an object", reason="snp.json")
        fmc = obj.get("fmc")
        return cls(
            bootloader=_u8(obj.get("bootloader"), f"{field}.bootloader"),
            tee=_u8(obj.get("tee"), f"{field}.tee"),
            snp=_u8(obj.get("snp"), f"{field}.snp"),
            microcode=_u8(obj.get("microcode"), f"{field}.microcode"),
            fmc=None if fmc is None else _u8(fmc, f"{field}.fmc"),
        )


@dataclass(frozen=True, slots=True)
class SnpPolicy:
    """Guest policy bits (ABI "GUEST_POLICY"; sev crate ``GuestPolicy``)."""

    value: int

    def bit(self, index: int) -> bool:
        return bool(self.value >> index & 1)

    @property
    def abi_minor(self) -> int:
        return self.value & 0xFF

    @property
    def abi_major(self) -> int:
        return (self.value >> 8) & 0xFF

    @property
    def smt_allowed(self) -> bool:
        return self.bit(16)

    @property
    def migrate_ma_allowed(self) -> bool:
        return self.bit(18)

    @property
    def debug_allowed(self) -> bool:
        return self.bit(19)

    @property
    def single_socket_required(self) -> bool:
        return self.bit(20)


@dataclass(frozen=True, slots=True)
class SnpPlatformInfo:
    """PLATFORM_INFO bits (sev crate ``PlatformInfo``)."""

    value: int

    @property
    def smt_enabled(self) -> bool:
        return bool(self.value & 1)

    @property
    def tsme_enabled(self) -> bool:
        return bool(self.value >> 1 & 1)


def _u8(value: Any, field: str) -> int:
    return _uint(value, field, 0xFF)


def _uint(value: Any, field: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise EvidenceError(f"{field} is not an integer in 0..{limit}", reason="snp.json")
    return value
