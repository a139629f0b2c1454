"""Hash tree geometry: how many levels, how many hash blocks each, and where they sit.

Mirrors cryptsetup's ``hash_levels()`` (lib/verity/verity_hash.c): with ``b`` = log2(entries
per hash block), the tree has the fewest levels ``L`` such that ``(data_blocks - 1) >> (b * L)``
is zero; level ``i`` (0 = the hashes of the data blocks, ``L - 1`` = the top block under the root)
holds ``ceil(data_blocks / 2**(b * (i + 1)))`` blocks, and the levels are stored TOP LEVEL FIRST
starting at ``tree_start_block``. One data block gives zero levels: the root is H(block).
"""

from __future__ import annotations

from dataclasses import dataclass

from trustpod.errors import EvidenceError

from .params import VerityParams
from .superblock import SUPERBLOCK_SIZE

__all__ = ["Level", "TreeGeometry", "entry_size"]


def entry_size(digest_size: int) -> int:
    """Bytes one digest occupies in a hash block: the next power of two of the digest size."""
    return 1 << (digest_size - 1).bit_length()


@dataclass(frozen=True, slots=True)
class Level:
    """One tree level: ``index`` 0 hashes data blocks; ``first_block`` is in hash-block units."""

    index: int
    first_block: int
    blocks: int
    #: number of blocks (data blocks for level 0) whose digests this level holds
    children: int


@dataclass(frozen=True, slots=True)
class TreeGeometry:
    params: VerityParams
    entry_size: int
    entries_per_block: int
    tree_start_block: int
    levels: tuple[Level, ...]

    @classmethod
    def compute(cls, params: VerityParams) -> TreeGeometry:
        entry = entry_size(params.digest_size)
        per_block = params.hash_block_size // entry
        bits = per_block.bit_length() - 1
        hbs = params.hash_block_size
        # (1) where the tree starts: after the superblock rounded up to a hash block, or at the
        # hash offset truncated to a hash block without one (cryptsetup VERITY_hash_offset_block)
        if params.superblock:
            start = (params.hash_offset + SUPERBLOCK_SIZE + hbs - 1) // hbs
        else:
            start = params.hash_offset // hbs
        # (2) number of levels
        n = params.data_blocks
        count = 0
        while bits * count < 64 and (n - 1) >> (bits * count):
            count += 1
        if bits * count >= 64:
            raise EvidenceError("verity tree would be too deep", reason="verity.geometry")
        # (3) sizes and positions, top level first
        sizes = [(n + (1 << (bits * (i + 1))) - 1) >> (bits * (i + 1)) for i in range(count)]
        pos = start
        firsts = [0] * count
        for i in range(count - 1, -1, -1):
            firsts[i] = pos
            pos += sizes[i]
        levels = tuple(
            Level(i, firsts[i], sizes[i], n if i == 0 else sizes[i - 1]) for i in range(count)
        )
        return cls(params, entry, per_block, start, levels)

    @property
    def hash_blocks(self) -> int:
        """Hash blocks of the tree, without the superblock (veritysetup's "Hash blocks")."""
        return sum(level.blocks for level in self.levels)

    @property
    def end_offset(self) -> int:
        """Byte offset just past the last hash block on the hash device."""
        return (self.tree_start_block + self.hash_blocks) * self.params.hash_block_size

    @property
    def data_size(self) -> int:
        return self.params.data_blocks * self.params.data_block_size

    def level_offset(self, level: int) -> int:
        return self.levels[level].first_block * self.params.hash_block_size

    def level_bytes(self, level: int) -> int:
        return self.levels[level].blocks * self.params.hash_block_size

    def data_range(self, level: int, entry_index: int) -> tuple[int, int]:
        """Data blocks covered by entry ``entry_index`` of ``level`` (half-open)."""
        span = self.entries_per_block**level
        lo = entry_index * span
        return lo, min(self.params.data_blocks, lo + span)
