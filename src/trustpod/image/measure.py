"""Expected PCR 11 of a pod VM boot, computed the way systemd-stub measures a UKI (pure).

Facts (systemd, ``src/fundamental/uki.c`` and ``src/boot/measure.c``/``systemd-measure``):
systemd-stub measures the UKI's PE sections into PCR 11 (``TPM2_PCR_KERNEL_BOOT``) in one fixed,
canonical order (``unified_sections[]``: .linux, .osrel, .cmdline, .initrd, .ucode, .splash,
.dtb, .uname, .sbat, .pcrsig, .pcrpkey, .profile, .hwids), not in file order. For each present,
non-empty section it extends twice: first H(section name including its trailing NUL), then
H(section contents). ``.pcrsig`` is never measured (it holds the signature over PCR 11). PCR
extend is ``new = H(old || digest)`` from an all-zero PCR. See ADR 0800 for what trustpod
measures (``.osrel`` and ``.cmdline``; ``.linux``/``.initrd`` only if their digests are given).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from trustpod.errors import EvidenceError

__all__ = [
    "KERNEL_BOOT_PCR",
    "UKI_SECTION_ORDER",
    "expected_pcr11",
    "extend",
    "measured_digests",
    "replay",
]

#: systemd's TPM2_PCR_KERNEL_BOOT
KERNEL_BOOT_PCR = 11
#: systemd ``unified_sections[]``: the canonical measurement order (do not reorder)
UKI_SECTION_ORDER = (
    ".linux",
    ".osrel",
    ".cmdline",
    ".initrd",
    ".ucode",
    ".splash",
    ".dtb",
    ".uname",
    ".sbat",
    ".pcrsig",
    ".pcrpkey",
    ".profile",
    ".hwids",
)
_NOT_MEASURED = frozenset({".pcrsig"})
_BANKS = ("sha1", "sha256", "sha384", "sha512")


def _bank(bank: str) -> str:
    if bank not in _BANKS:
        raise EvidenceError(f"unsupported PCR bank {bank!r}", reason="image.pcr_bank")
    return bank


def measured_digests(
    sections: Mapping[str, bytes],
    *,
    bank: str = "sha256",
    content_digests: Mapping[str, bytes] | None = None,
) -> list[bytes]:
    """The digests extended into PCR 11 for ``sections`` (name -> contents), in order.

    ``content_digests`` gives H(contents) for big sections (``.linux``, ``.initrd``) whose bytes
    are not at hand; a section in both mappings is an error.
    """
    _bank(bank)
    given = dict(content_digests or {})
    unknown = (set(sections) | set(given)) - set(UKI_SECTION_ORDER)
    if unknown:
        raise EvidenceError(
            f"unknown UKI section(s) {sorted(unknown)}",
            reason="image.uki_section",
            fix=f"sections are {', '.join(UKI_SECTION_ORDER)}",
        )
    if set(sections) & set(given):
        raise EvidenceError("a section is given twice", reason="image.uki_section")
    out: list[bytes] = []
    size = hashlib.new(bank).digest_size
    for name in UKI_SECTION_ORDER:  # (1) canonical order, not file order
        if name in _NOT_MEASURED:
            continue
        if name in sections:
            if not sections[name]:  # (2) empty sections are skipped, as the stub does
                continue
            content = hashlib.new(bank, sections[name]).digest()
        elif name in given:
            content = given[name]
            if len(content) != size:
                raise EvidenceError(
                    f"digest of {name} is not a {bank} digest", reason="image.uki_section"
                )
        else:
            continue
        # (3) name including the trailing NUL, then the contents
        out.append(hashlib.new(bank, name.encode("ascii") + b"\x00").digest())
        out.append(content)
    return out


def extend(pcr: bytes, digest: bytes, bank: str = "sha256") -> bytes:
    """TPM2_PCR_Extend: ``H(pcr || digest)``."""
    return hashlib.new(_bank(bank), pcr + digest).digest()


def replay(digests: Sequence[bytes], bank: str = "sha256") -> bytes:
    """PCR value after extending ``digests`` into a PCR that starts at all zeros."""
    pcr = bytes(hashlib.new(_bank(bank)).digest_size)
    for d in digests:
        pcr = extend(pcr, d, bank)
    return pcr


def expected_pcr11(
    cmdline: str,
    *,
    osrel: bytes | None = None,
    content_digests: Mapping[str, bytes] | None = None,
    bank: str = "sha256",
) -> bytes:
    """PCR 11 after systemd-stub measured a UKI with this ``.cmdline`` (UTF-8, as is).

    Only the measurement of the UKI sections is modelled: on a real boot systemd-pcrphase would
    extend boot phase strings later; the pod VM image masks those units (guest doc §7).
    """
    sections: dict[str, bytes] = {".cmdline": cmdline.encode("utf-8")}
    if osrel is not None:
        sections[".osrel"] = osrel
    return replay(measured_digests(sections, bank=bank, content_digests=content_digests), bank)
