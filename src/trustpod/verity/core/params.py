"""dm-verity parameters: the named limits and the checks shared by the superblock and the CLI.

Limits follow cryptsetup 2.6 (``lib/verity/verity.c``): block sizes are powers of two from 512 B to
512 KiB, the salt is at most 256 bytes, and the hash area offset is a multiple of 512. Only SHA-256
and SHA-512 are accepted (veritysetup also takes sha1/md5/...: see docs/compat.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from trustpod.errors import EvidenceError, TrustpodError

__all__ = [
    "MAX_BLOCK_SIZE",
    "MAX_SALT_SIZE",
    "MIN_BLOCK_SIZE",
    "SECTOR_SIZE",
    "SUPPORTED_ALGORITHMS",
    "SUPPORTED_HASH_TYPES",
    "VerityParams",
    "check_algorithm",
    "check_block_size",
    "check_salt",
    "parse_salt",
    "parse_uuid",
    "uuid_text",
]

MIN_BLOCK_SIZE = 512
MAX_BLOCK_SIZE = 512 * 1024
MAX_SALT_SIZE = 256
SECTOR_SIZE = 512
SUPPORTED_ALGORITHMS = ("sha256", "sha512")
SUPPORTED_HASH_TYPES = (0, 1)


def check_algorithm(name: str, error: type[TrustpodError] = EvidenceError) -> str:
    if name not in SUPPORTED_ALGORITHMS:
        raise error(
            f"unsupported verity hash algorithm {name!r}",
            reason="verity.algorithm",
            fix=f"use one of {', '.join(SUPPORTED_ALGORITHMS)} (weaker hashes are refused)",
        )
    return name


def check_block_size(size: int, what: str, error: type[TrustpodError] = EvidenceError) -> int:
    if size < MIN_BLOCK_SIZE or size > MAX_BLOCK_SIZE or size & (size - 1):
        raise error(
            f"verity {what} {size} is not a power of two between {MIN_BLOCK_SIZE} and "
            f"{MAX_BLOCK_SIZE}",
            reason="verity.block_size",
            fix="use 512, 1024, 2048 or 4096 (the usual value)",
        )
    return size


def check_salt(salt: bytes, error: type[TrustpodError] = EvidenceError) -> bytes:
    if len(salt) > MAX_SALT_SIZE:
        raise error(
            f"verity salt is {len(salt)} bytes; at most {MAX_SALT_SIZE} are allowed",
            reason="verity.salt",
        )
    return salt


def parse_salt(text: str, error: type[TrustpodError] = EvidenceError) -> bytes:
    """Hex salt as veritysetup takes it; ``-`` (or empty) means no salt."""
    if text in ("-", ""):
        return b""
    try:
        salt = bytes.fromhex(text)
    except ValueError as exc:
        raise error(
            "verity salt is not hexadecimal", reason="verity.salt", fix="pass --salt HEX or -"
        ) from exc
    return check_salt(salt, error)


def parse_uuid(text: str, error: type[TrustpodError] = EvidenceError) -> bytes:
    try:
        import uuid as uuidlib  # only when a UUID is given: keeps CLI start short

        return uuidlib.UUID(text).bytes
    except ValueError as exc:
        raise error(f"{text!r} is not a UUID", reason="verity.uuid") from exc


@dataclass(frozen=True, slots=True)
class VerityParams:
    """Everything that determines the hash tree (veritysetup's format options).

    ``hash_offset`` is where the hash area starts on the hash device (the superblock, if any,
    sits there); ``superblock=False`` is veritysetup's ``--no-superblock``.
    """

    algorithm: str = "sha256"
    data_block_size: int = 4096
    hash_block_size: int = 4096
    data_blocks: int = 1
    salt: bytes = b""
    uuid: bytes = b"\x00" * 16
    hash_type: int = 1
    hash_offset: int = 0
    superblock: bool = True

    def __post_init__(self) -> None:
        check_algorithm(self.algorithm)
        check_block_size(self.data_block_size, "data block size")
        check_block_size(self.hash_block_size, "hash block size")
        check_salt(self.salt)
        if self.hash_type not in SUPPORTED_HASH_TYPES:
            raise EvidenceError(
                f"unsupported verity hash type {self.hash_type}", reason="verity.hash_type"
            )
        if self.data_blocks <= 0 or self.data_blocks >= 1 << 63:
            raise EvidenceError(
                f"verity data block count {self.data_blocks} is out of range",
                reason="verity.data_blocks",
                fix="the data device must hold at least one full data block",
            )
        if self.hash_offset < 0 or self.hash_offset % SECTOR_SIZE:
            raise EvidenceError(
                f"verity hash offset {self.hash_offset} is not a multiple of {SECTOR_SIZE}",
                reason="verity.hash_offset",
            )
        if len(self.uuid) != 16:
            raise EvidenceError("verity UUID must be 16 bytes", reason="verity.uuid")

    @property
    def digest_size(self) -> int:
        return hashlib.new(self.algorithm).digest_size

    @property
    def uuid_text(self) -> str:
        return uuid_text(self.uuid)


def uuid_text(raw: bytes) -> str:
    """The canonical 8-4-4-4-12 form of 16 UUID bytes (what ``str(uuid.UUID(bytes=raw))``
    prints, without importing ``uuid`` on every CLI start)."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
