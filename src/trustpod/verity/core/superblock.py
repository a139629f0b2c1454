"""The dm-verity on-disk superblock (cryptsetup ``struct verity_sb``), parsed once into a model.

Layout (512 bytes, little-endian; veritysetup pads it with zeros to one hash block):

====== ===== ==============================================================
offset size  field
====== ===== ==============================================================
0      8     signature ``"verity\\0\\0"``
8      4     version (1)
12     4     hash_type (1 = salt first, dm-verity default; 0 = Chrome OS, salt last)
16     16    uuid
32     32    algorithm (ASCII, NUL-padded)
64     4     data_block_size
68     4     hash_block_size
72     8     data_blocks
80     2     salt_size
82     6     padding
88     256   salt (first ``salt_size`` bytes)
344    168   padding
====== ===== ==============================================================
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from trustpod.errors import EvidenceError

from .params import (
    SUPPORTED_HASH_TYPES,
    check_algorithm,
    check_block_size,
    check_salt,
    uuid_text,
)

__all__ = [
    "ALGORITHM_OFF",
    "DATA_BLOCKS_OFF",
    "DATA_BLOCK_SIZE_OFF",
    "HASH_BLOCK_SIZE_OFF",
    "HASH_TYPE_OFF",
    "SALT_OFF",
    "SALT_SIZE_OFF",
    "SIGNATURE",
    "SIGNATURE_OFF",
    "SUPERBLOCK_SIZE",
    "SUPERBLOCK_VERSION",
    "UUID_OFF",
    "VERSION_OFF",
    "Superblock",
]

SUPERBLOCK_SIZE = 512
SIGNATURE = b"verity\x00\x00"
SUPERBLOCK_VERSION = 1

SIGNATURE_OFF = 0
VERSION_OFF = 8
HASH_TYPE_OFF = 12
UUID_OFF = 16
ALGORITHM_OFF = 32
DATA_BLOCK_SIZE_OFF = 64
HASH_BLOCK_SIZE_OFF = 68
DATA_BLOCKS_OFF = 72
SALT_SIZE_OFF = 80
SALT_OFF = 88
_SALT_FIELD = 256
_ALGORITHM_FIELD = 32

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class Superblock:
    """A validated dm-verity superblock (version 1)."""

    hash_type: int
    uuid: bytes
    algorithm: str
    data_block_size: int
    hash_block_size: int
    data_blocks: int
    salt: bytes

    def __post_init__(self) -> None:
        # (1) same limits veritysetup applies when it writes or reads a header
        if self.hash_type not in SUPPORTED_HASH_TYPES:
            raise EvidenceError(
                f"unsupported verity hash type {self.hash_type}",
                reason="verity.hash_type",
                fix="only hash type 1 (dm-verity) and 0 (Chrome OS) exist",
            )
        if len(self.uuid) != 16:
            raise EvidenceError("verity UUID must be 16 bytes", reason="verity.uuid")
        check_algorithm(self.algorithm)
        check_block_size(self.data_block_size, "data block size")
        check_block_size(self.hash_block_size, "hash block size")
        check_salt(self.salt)
        if self.data_blocks <= 0 or self.data_blocks >= 1 << 63:
            raise EvidenceError(
                f"verity data block count {self.data_blocks} is out of range",
                reason="verity.data_blocks",
            )

    @property
    def uuid_text(self) -> str:
        return uuid_text(self.uuid)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Superblock:
        """Parse the first 512 bytes of a hash device (more bytes are ignored)."""
        if len(raw) < SUPERBLOCK_SIZE:
            raise EvidenceError(
                f"verity superblock truncated: {len(raw)} of {SUPERBLOCK_SIZE} bytes",
                reason="verity.truncated",
                fix="the hash device is shorter than one superblock; was it copied completely?",
            )
        # (1) signature and version: cryptsetup VERITY_read_sb
        if raw[SIGNATURE_OFF : SIGNATURE_OFF + len(SIGNATURE)] != SIGNATURE:
            raise EvidenceError(
                "no verity superblock (bad signature)",
                reason="verity.magic",
                fix="the file is not a hash device made with a superblock; pass the verity "
                "parameters explicitly with --no-superblock",
            )
        (version,) = _U32.unpack_from(raw, VERSION_OFF)
        if version != SUPERBLOCK_VERSION:
            raise EvidenceError(
                f"unsupported verity superblock version {version}",
                reason="verity.version",
                fix="only superblock version 1 exists",
            )
        # (2) fields
        (hash_type,) = _U32.unpack_from(raw, HASH_TYPE_OFF)
        alg_raw = raw[ALGORITHM_OFF : ALGORITHM_OFF + _ALGORITHM_FIELD]
        name = alg_raw.split(b"\x00", 1)[0]
        try:
            algorithm = name.decode("ascii")
        except UnicodeDecodeError as exc:
            raise EvidenceError(
                "verity algorithm name is not ASCII", reason="verity.algorithm"
            ) from exc
        (salt_size,) = _U16.unpack_from(raw, SALT_SIZE_OFF)
        if salt_size > _SALT_FIELD:
            raise EvidenceError(
                f"verity salt size {salt_size} exceeds {_SALT_FIELD} bytes",
                reason="verity.salt",
            )
        return cls(
            hash_type=hash_type,
            uuid=bytes(raw[UUID_OFF : UUID_OFF + 16]),
            algorithm=algorithm,
            data_block_size=_U32.unpack_from(raw, DATA_BLOCK_SIZE_OFF)[0],
            hash_block_size=_U32.unpack_from(raw, HASH_BLOCK_SIZE_OFF)[0],
            data_blocks=_U64.unpack_from(raw, DATA_BLOCKS_OFF)[0],
            salt=bytes(raw[SALT_OFF : SALT_OFF + salt_size]),
        )

    def to_bytes(self) -> bytes:
        """The 512-byte on-disk form (unused fields zero, as veritysetup writes them)."""
        out = bytearray(SUPERBLOCK_SIZE)
        out[SIGNATURE_OFF : SIGNATURE_OFF + len(SIGNATURE)] = SIGNATURE
        _U32.pack_into(out, VERSION_OFF, SUPERBLOCK_VERSION)
        _U32.pack_into(out, HASH_TYPE_OFF, self.hash_type)
        out[UUID_OFF : UUID_OFF + 16] = self.uuid
        alg = self.algorithm.encode("ascii")
        out[ALGORITHM_OFF : ALGORITHM_OFF + len(alg)] = alg
        _U32.pack_into(out, DATA_BLOCK_SIZE_OFF, self.data_block_size)
        _U32.pack_into(out, HASH_BLOCK_SIZE_OFF, self.hash_block_size)
        _U64.pack_into(out, DATA_BLOCKS_OFF, self.data_blocks)
        _U16.pack_into(out, SALT_SIZE_OFF, len(self.salt))
        out[SALT_OFF : SALT_OFF + len(self.salt)] = self.salt
        return bytes(out)
