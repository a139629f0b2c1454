"""Salted block hashing over buffers the I/O layer hands in (no I/O here).

Hash type 1 (dm-verity) computes ``H(salt || block)``; type 0 (Chrome OS) ``H(block || salt)``.

Speed (ADR 0801, measured in docs/performance.md): the per-block cost on top of SHA-256 itself
is what separates a Python tree from veritysetup, so ``SaltedSlots`` lays a buffer out as
``count`` slots of ``salt || block`` (or ``block || salt``) with the salt written once; the I/O
layer scatter-reads the blocks straight into their slots (``preadv`` with one iovec per block)
and ``BlockHasher.digest_slots`` hashes every slot with one C-level call per block
(``map(hashlib.sha256, slots)``): no per-block copy of a salted state, no bytecode per block.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Protocol, TypeAlias

from .params import VerityParams

__all__ = ["BlockHasher", "BufferLike", "SaltedSlots", "pad_to_block"]

BufferLike: TypeAlias = bytes | bytearray | memoryview


class _Hash(Protocol):
    def update(self, data: BufferLike, /) -> None: ...
    def digest(self) -> bytes: ...
    def copy(self) -> _Hash: ...


class SaltedSlots:
    """A reusable buffer of ``count`` slots, each ``salt || block`` (salt first) or
    ``block || salt``; ``blocks[i]`` is where block ``i`` goes, ``slots[i]`` what is hashed."""

    __slots__ = ("block_size", "blocks", "buffer", "count", "slots")

    def __init__(self, salt: bytes, salt_first: bool, block_size: int, count: int) -> None:
        if count < 1:
            raise ValueError("a slot buffer holds at least one block")
        size = len(salt) + block_size
        self.buffer = bytearray(size * count)
        view = memoryview(self.buffer)
        at = 0 if salt_first else block_size  # where the salt sits in a slot
        first = len(salt) if salt_first else 0  # where the block sits
        for i in range(count):
            view[i * size + at : i * size + at + len(salt)] = salt
        self.block_size = block_size
        self.count = count
        self.blocks: list[memoryview] = [
            view[i * size + first : i * size + first + block_size] for i in range(count)
        ]
        self.slots: list[memoryview] = [view[i * size : (i + 1) * size] for i in range(count)]


class BlockHasher:
    """Hashes blocks with the algorithm, salt and hash type of ``params``."""

    __slots__ = ("_base", "_new", "_salt", "_salt_first", "digest_size")

    def __init__(self, params: VerityParams) -> None:
        self._salt = params.salt
        self._salt_first = params.hash_type == 1
        # hashlib.sha256 / hashlib.sha512 are OpenSSL's C constructors: calling them through
        # map() costs no bytecode per block (hashlib.new would be a Python-level call)
        self._new: Callable[[BufferLike], _Hash] = getattr(hashlib, params.algorithm)
        base: _Hash = self._new(b"")
        if self._salt_first and self._salt:
            base.update(self._salt)
        self._base = base
        self.digest_size = len(base.digest())

    def slots(self, block_size: int, count: int) -> SaltedSlots:
        """A slot buffer for ``count`` blocks of ``block_size`` with this hasher's salt."""
        return SaltedSlots(self._salt, self._salt_first, block_size, count)

    def digest_slots(self, slots: Sequence[memoryview]) -> bytes:
        """Concatenated digests of whole slots (salt already in place)."""
        digest = type(self._base).digest
        return b"".join(map(digest, map(self._new, slots)))

    def digest(self, block: BufferLike) -> bytes:
        h = self._base.copy()
        h.update(block)
        if not self._salt_first:
            h.update(self._salt)
        return h.digest()

    def digests(self, buf: BufferLike, block_size: int) -> bytes:
        """Concatenated digests of each ``block_size`` block of ``buf`` (a whole multiple)."""
        view = memoryview(buf).cast("B")
        size = len(view)
        if size % block_size:
            raise ValueError("buffer is not a whole number of blocks")
        return b"".join(self.digest(view[o : o + block_size]) for o in range(0, size, block_size))


def pad_to_block(data: bytes, block_size: int) -> bytes:
    """Zero-pad ``data`` to a whole number of blocks (the unused tail of a level's last block)."""
    rem = len(data) % block_size
    return data if not rem else data + b"\x00" * (block_size - rem)
