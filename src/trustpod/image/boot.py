"""Pod VM side: refuse to start from an image that does not match the measured command line,
and extend PCR 11 the way systemd-stub does (through a small port).

``check_root`` is what the emulated CVM and the local pod runtime call before starting the guest
agents: the root hash comes from the (measured) kernel command line, never from the image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from trustpod.errors import VerificationError
from trustpod.image.cmdline import VerityCmdline, parse_cmdline
from trustpod.image.manifest import BootManifest
from trustpod.image.measure import KERNEL_BOOT_PCR, measured_digests, replay
from trustpod.verity.core import VerityParams
from trustpod.verity.files import params_from_superblock, read_superblock, verify_files

__all__ = [
    "EmulatorPcrs",
    "PcrExtender",
    "boot_pod_vm",
    "check_root",
    "expected_pcr11",
    "measure_uki_boot",
    "verity_params",
]

log = logging.getLogger(__name__)


class PcrExtender(Protocol):
    """Port: extend one SHA-256 PCR bank entry (a TPM, a vTPM, an emulator)."""

    def extend(self, pcr: int, digest: bytes) -> None: ...


class _HasExtendPcr(Protocol):
    def extend_pcr(self, index: int, digest: bytes) -> None: ...


class EmulatorPcrs:
    """Adapter for objects with ``extend_pcr(index, digest)`` (``trustpod.guest.emulator``)."""

    def __init__(self, target: _HasExtendPcr) -> None:
        self._target = target

    def extend(self, pcr: int, digest: bytes) -> None:
        self._target.extend_pcr(pcr, digest)


def _cmdline_of(source: BootManifest | str) -> tuple[str, bytes | None]:
    if isinstance(source, BootManifest):
        return source.cmdline, source.osrel.encode() if source.osrel is not None else None
    return source, None


def expected_pcr11(source: BootManifest | str) -> bytes:
    """PCR 11 (SHA-256) after the UKI measurement of this manifest's (or cmdline's) sections."""
    cmdline, osrel = _cmdline_of(source)
    sections = {".cmdline": cmdline.encode("utf-8")}
    if osrel is not None:
        sections[".osrel"] = osrel
    return replay(measured_digests(sections))


def measure_uki_boot(extender: PcrExtender, source: BootManifest | str) -> bytes:
    """Extend PCR 11 with the section measurements; return the value PCR 11 should now hold
    if it started at zero."""
    cmdline, osrel = _cmdline_of(source)
    sections = {".cmdline": cmdline.encode("utf-8")}
    if osrel is not None:
        sections[".osrel"] = osrel
    digests = measured_digests(sections)
    for digest in digests:
        extender.extend(KERNEL_BOOT_PCR, digest)
    return replay(digests)


def verity_params(parsed: VerityCmdline, hash_path: Path) -> VerityParams:
    """Parameters for the check: the superblock's, each one pinned by the command line must
    agree; without a superblock the command line must pin them all."""
    offset = parsed.params.hash_offset
    if not parsed.params.superblock:
        missing = {"data-blocks", "salt"} - parsed.pinned
        if missing:
            raise VerificationError(
                f"command line lacks verity option(s) {sorted(missing)} for a hash device "
                "without superblock",
                reason="image.verity_params",
            )
        return parsed.params
    sb = params_from_superblock(read_superblock(hash_path, offset), offset)
    pinned = {
        "hash": (parsed.params.algorithm, sb.algorithm),
        "data-block-size": (parsed.params.data_block_size, sb.data_block_size),
        "hash-block-size": (parsed.params.hash_block_size, sb.hash_block_size),
        "data-blocks": (parsed.params.data_blocks, sb.data_blocks),
        "salt": (parsed.params.salt, sb.salt),
        "uuid": (parsed.params.uuid, sb.uuid),
        "format": (parsed.params.hash_type, sb.hash_type),
    }
    for key, (want, got) in pinned.items():
        if key in parsed.pinned and want != got:
            raise VerificationError(
                f"verity superblock {key} differs from the measured command line",
                reason="image.verity_params_mismatch",
                fix="the hash device does not belong to this boot; rebuild the image",
            )
    return sb


def check_root(source: BootManifest | str, data_path: Path, hash_path: Path) -> VerityCmdline:
    """Verify the root image against ``roothash=`` of the measured command line.

    Raises ``VerificationError`` (``VerityCorruption`` naming the first bad data block and the
    tree level) when it does not verify; callers must then not start the guest agents.
    """
    cmdline, _ = _cmdline_of(source)
    # (1) root hash and options from the measured command line
    parsed = parse_cmdline(cmdline)
    # (2) parameters: superblock cross-checked against what the command line pins
    params = verity_params(parsed, hash_path)
    # (3) the whole tree and every data block against the root hash
    try:
        verify_files(data_path, hash_path, parsed.root_hash, params)
    except VerificationError as exc:
        log.error("root image %s does not verify: %s", data_path, exc.message)
        raise
    log.info("root image %s verified against roothash=%s", data_path, parsed.root_hash.hex())
    return parsed


def boot_pod_vm(
    extender: PcrExtender, source: BootManifest | str, data_path: Path, hash_path: Path
) -> bytes:
    """The pod VM's boot in the order a real one does it: systemd-stub measures the UKI sections
    into PCR 11 (1), then the initrd sets up dm-verity from ``roothash=`` (2). Returns the
    expected PCR 11; raises (after measuring) if the root image does not verify, in which case
    the guest agents must not be started."""
    pcr11 = measure_uki_boot(extender, source)  # (1)
    check_root(source, data_path, hash_path)  # (2)
    return pcr11
