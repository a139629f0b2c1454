"""Pure dm-verity core: superblock model, tree geometry and salted block hashing (no I/O)."""

from __future__ import annotations

from .errors import ROOT_LEVEL, VerityCorruption
from .geometry import Level, TreeGeometry, entry_size
from .hashing import BlockHasher, SaltedSlots, pad_to_block
from .params import (
    MAX_BLOCK_SIZE,
    MAX_SALT_SIZE,
    MIN_BLOCK_SIZE,
    SUPPORTED_ALGORITHMS,
    VerityParams,
    check_algorithm,
    check_block_size,
    parse_salt,
    parse_uuid,
)
from .superblock import SUPERBLOCK_SIZE, Superblock

__all__ = [
    "MAX_BLOCK_SIZE",
    "MAX_SALT_SIZE",
    "MIN_BLOCK_SIZE",
    "ROOT_LEVEL",
    "SUPERBLOCK_SIZE",
    "SUPPORTED_ALGORITHMS",
    "BlockHasher",
    "Level",
    "SaltedSlots",
    "Superblock",
    "TreeGeometry",
    "VerityCorruption",
    "VerityParams",
    "check_algorithm",
    "check_block_size",
    "entry_size",
    "pad_to_block",
    "parse_salt",
    "parse_uuid",
]
