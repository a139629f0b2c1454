"""Salted block hashing over buffers the I/O layer hands in (no I/O here).

Hash type 1 (dm-verity) computes ``H(salt || block)``; type 0 (Chrome OS) ``H(block || salt)``.
For speed the salted prefix is hashed once and ``copy()``-ed per block, blocks are
``memoryview`` slices (no copies) and the digests of a whole buffer come back as one ``bytes``.
hashlib releases the GIL for blocks of 2 KiB and more, so callers may hash buffers in threads.
"""

from __future__ import annotations

import hashlib
from typing import Protocol, TypeAlias

from .params import VerityParams

__all__ = ["BlockHasher", "BufferLike", "pad_to_block"]

BufferLike: TypeAlias = bytes | bytearray | memoryview


class _Hash(Protocol):
    def update(self, data: BufferLike, /) -> None: ...
    def digest(self) -> bytes: ...
    def copy(self) -> _Hash: ...


class BlockHasher:
    """Hashes blocks with the algorithm, salt and hash type of ``params``."""

    __slots__ = ("_base", "_name", "_salt", "_salt_first", "digest_size")

    def __init__(self, params: VerityParams) -> None:
        self._name = params.algorithm
        self._salt = params.salt
        self._salt_first = params.hash_type == 1
        base: _Hash = hashlib.new(params.algorithm)
        if self._salt_first and self._salt:
            base.update(self._salt)
        self._base = base
        self.digest_size = base.digest().__len__()

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
        if self._salt_first:
            copy = self._base.copy
            out: list[bytes] = []
            append = out.append
            for off in range(0, size, block_size):
                h = copy()
                h.update(view[off : off + block_size])
                append(h.digest())
            return b"".join(out)
        return b"".join(self.digest(view[o : o + block_size]) for o in range(0, size, block_size))


def pad_to_block(data: bytes, block_size: int) -> bytes:
    """Zero-pad ``data`` to a whole number of blocks (the unused tail of a level's last block)."""
    rem = len(data) % block_size
    return data if not rem else data + b"\x00" * (block_size - rem)
