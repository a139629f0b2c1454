"""Streaming format and verify over files: bounded memory, big sequential reads.

The pure core (``trustpod.verity.core``) does the geometry and the hashing; this module owns
the file descriptors. Memory is O(``chunk_bytes``) whatever the image size: level 0 digests are
written to the hash file as they are computed and the upper levels are hashed back from it.
"""

from __future__ import annotations

import hmac
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trustpod.errors import EvidenceError
from trustpod.verity.core import (
    ROOT_LEVEL,
    SUPERBLOCK_SIZE,
    BlockHasher,
    SaltedSlots,
    Superblock,
    TreeGeometry,
    VerityCorruption,
    VerityParams,
)
from trustpod.verity.fileio import read_exact, read_scatter, write_all

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_WORKERS",
    "Progress",
    "format_tree",
    "read_exact",
    "verify_tree",
]

#: bytes read per I/O call (a whole number of blocks is taken): small enough that the buffer
#: stays in the core's L2 cache between the read and the hashing (measured: 4 MiB chunks
#: cost more CPU per byte); memory is about ``2 * workers * chunk_bytes``
DEFAULT_CHUNK_BYTES = 256 * 1024
#: threads reading and hashing data chunks. One by default: a second thread only helps when a
#: second core is idle, and costs CPU time (thread hand-offs, GIL) on every run (ADR 0801).
#: hashlib releases the GIL for blocks >= 2 KiB, so callers with a free core may ask for 2.
DEFAULT_WORKERS = 1

#: ``progress(done_bytes, total_bytes)``
Progress = Callable[[int, int], None]


#: level digests are written in pieces of about this size (one pwrite per 256 KiB data chunk
#: would be 2,048 system calls per 512 MiB)
_WRITE_BATCH = 256 * 1024
#: Linux's IOV_MAX: a scatter read takes at most this many blocks
_MAX_IOVECS = 1024


def _chunks(total_blocks: int, block_size: int, chunk_bytes: int) -> Iterator[tuple[int, int]]:
    """(first_block, block_count) pairs covering ``total_blocks``."""
    per = _per_chunk(block_size, chunk_bytes)
    for first in range(0, total_blocks, per):
        yield first, min(per, total_blocks - first)


def _per_chunk(block_size: int, chunk_bytes: int) -> int:
    return max(1, min(_MAX_IOVECS, chunk_bytes // block_size))


@dataclass(frozen=True, slots=True)
class _Source:
    fd: int
    offset: int
    blocks: int
    block_size: int
    what: str


def _digest_stream(
    src: _Source,
    hasher: BlockHasher,
    chunk_bytes: int,
    progress: Progress | None = None,
    workers: int = 1,
) -> Iterator[tuple[int, bytes]]:
    """Yield (first_block, concatenated digests) for the blocks of ``src``, chunk by chunk, in
    order. Each chunk is scatter-read into a reused salted slot buffer and hashed slot by slot
    (``SaltedSlots``). With ``workers`` > 1, chunks are read and hashed in a thread pool (hashlib
    and ``preadv`` release the GIL); at most ``2 * workers`` chunks are in flight."""
    local = threading.local()
    bs = src.block_size
    per = _per_chunk(bs, chunk_bytes)

    def task(first: int, count: int) -> bytes:
        slots: SaltedSlots | None = getattr(local, "slots", None)
        if slots is None:
            slots = local.slots = hasher.slots(bs, per)
        if count == per:
            read_scatter(src.fd, slots.blocks, src.offset + first * bs, src.what)
            return hasher.digest_slots(slots.slots)
        read_scatter(src.fd, slots.blocks[:count], src.offset + first * bs, src.what)
        return hasher.digest_slots(slots.slots[:count])

    total = src.blocks * bs
    chunks = _chunks(src.blocks, bs, chunk_bytes)
    if workers <= 1 or src.blocks * bs <= chunk_bytes:
        for first, count in chunks:
            yield first, task(first, count)
            if progress is not None:
                progress((first + count) * bs, total)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verity") as pool:
        pending: deque[tuple[int, int, Future[bytes]]] = deque()
        for first, count in chunks:
            pending.append((first, count, pool.submit(task, first, count)))
            if len(pending) < 2 * workers:
                continue
            done_first, done_count, fut = pending.popleft()
            yield done_first, fut.result()
            if progress is not None:
                progress((done_first + done_count) * bs, total)
        while pending:
            done_first, done_count, fut = pending.popleft()
            yield done_first, fut.result()
            if progress is not None:
                progress((done_first + done_count) * bs, total)


def format_tree(
    data_fd: int,
    hash_fd: int,
    params: VerityParams,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: Progress | None = None,
    workers: int = DEFAULT_WORKERS,
) -> tuple[bytes, TreeGeometry]:
    """Write the hash tree (and superblock) for ``params``; return (root hash, geometry)."""
    geo = TreeGeometry.compute(params)
    hasher = BlockHasher(params)
    if geo.entry_size != hasher.digest_size:  # digests fill their slots for sha256/sha512
        raise EvidenceError("digest slot padding is not supported", reason="verity.algorithm")
    hbs = params.hash_block_size
    dbs = params.data_block_size
    data = _Source(data_fd, 0, params.data_blocks, dbs, "data device")
    if not geo.levels:
        # (1) a single data block: no hash blocks, root = H(salt || block)
        root = hasher.digest(read_exact(data_fd, dbs, 0, "data device"))
        if progress is not None:
            progress(dbs, dbs)
    else:
        # (2) level 0 from the data, written sequentially; then each level from the one below
        for level in geo.levels:
            src = (
                data
                if level.index == 0
                else _Source(
                    hash_fd,
                    geo.level_offset(level.index - 1),
                    geo.levels[level.index - 1].blocks,
                    hbs,
                    "hash device",
                )
            )
            out = geo.level_offset(level.index)
            written = 0
            pending: list[bytes] = []  # digests batched into ~_WRITE_BATCH-byte writes
            batched = 0
            for _first, digests in _digest_stream(
                src, hasher, chunk_bytes, progress if level.index == 0 else None, workers
            ):
                pending.append(digests)
                batched += len(digests)
                if batched >= _WRITE_BATCH:
                    write_all(hash_fd, b"".join(pending), out + written)
                    written += batched
                    pending, batched = [], 0
            pad = (-(written + batched)) % hbs
            if batched or pad:
                write_all(hash_fd, b"".join(pending) + b"\x00" * pad, out + written)
        top = geo.levels[-1]
        root = hasher.digest(read_exact(hash_fd, hbs, geo.level_offset(top.index), "hash device"))
    # (3) superblock at the hash offset (cryptsetup VERITY_write_sb), then make sure the device
    # reaches the end of the tree even when the last thing written was shorter
    if params.superblock:
        write_all(hash_fd, _superblock_bytes(params), params.hash_offset)
    st = os.fstat(hash_fd)
    if stat.S_ISREG(st.st_mode) and st.st_size < geo.end_offset:
        os.ftruncate(hash_fd, geo.end_offset)
    return root, geo


def _superblock_bytes(params: VerityParams) -> bytes:
    sb = Superblock(
        hash_type=params.hash_type,
        uuid=params.uuid,
        algorithm=params.algorithm,
        data_block_size=params.data_block_size,
        hash_block_size=params.hash_block_size,
        data_blocks=params.data_blocks,
        salt=params.salt,
    )
    raw = sb.to_bytes()
    assert len(raw) == SUPERBLOCK_SIZE
    return raw


def _first_mismatch(
    src: _Source,
    hasher: BlockHasher,
    stored_fd: int,
    stored_offset: int,
    chunk_bytes: int,
    limit_blocks: int,
    progress: Progress | None = None,
    workers: int = 1,
) -> int | None:
    """Index of the first block of ``src`` whose digest differs from the stored entry."""
    limited = _Source(src.fd, src.offset, min(src.blocks, limit_blocks), src.block_size, src.what)
    size = hasher.digest_size
    for first, digests in _digest_stream(limited, hasher, chunk_bytes, progress, workers):
        stored = read_exact(stored_fd, len(digests), stored_offset + first * size, "hash device")
        if digests != stored:
            for i in range(0, len(digests), size):
                if not hmac.compare_digest(digests[i : i + size], stored[i : i + size]):
                    return first + i // size
    return None


def verify_tree(
    data_fd: int,
    hash_fd: int,
    params: VerityParams,
    root_hash: bytes,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: Progress | None = None,
    workers: int = DEFAULT_WORKERS,
) -> TreeGeometry:
    """Raise ``VerityCorruption`` naming the first bad data block and the level, else return."""
    geo = TreeGeometry.compute(params)
    hasher = BlockHasher(params)
    hbs = params.hash_block_size
    dbs = params.data_block_size
    nlevels = len(geo.levels)
    # (1) the root: H(top hash block), or H(data block) for a single-block image
    if nlevels == 0:
        top = read_exact(data_fd, dbs, 0, "data device")
    else:
        top = read_exact(hash_fd, hbs, geo.level_offset(nlevels - 1), "hash device")
    if not hmac.compare_digest(hasher.digest(top), root_hash):
        raise VerityCorruption(0, ROOT_LEVEL, nlevels)
    if nlevels == 0:
        return geo
    # (2) top-down: hash each stored level and compare with the entries one level up; a
    # mismatch at entry j of level i means hash block j of level i - 1 (or data block j) changed
    found: tuple[int, int] | None = None  # (first data block, level)
    limit = params.data_blocks
    for level in reversed(geo.levels):
        if level.index == 0:
            src = _Source(data_fd, 0, params.data_blocks, dbs, "data device")
            span = 1
        else:
            below = geo.levels[level.index - 1]
            src = _Source(hash_fd, geo.level_offset(below.index), below.blocks, hbs, "hash device")
            span = geo.entries_per_block**level.index
        bad = _first_mismatch(
            src,
            hasher,
            hash_fd,
            geo.level_offset(level.index),
            chunk_bytes,
            -(-limit // span),
            progress if level.index == 0 else None,
            workers,
        )
        if bad is not None:
            start = geo.data_range(level.index, bad)[0]
            if found is None or start < found[0]:
                found = (start, level.index)
                limit = start
    if found is not None:
        raise VerityCorruption(found[0], found[1], nlevels)
    return geo
