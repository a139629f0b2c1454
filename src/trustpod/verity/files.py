"""File-level dm-verity operations (what ``trustpod verity`` and the image builder call).

Opens the data and hash files, applies the partial-tail policy, checks that a shared data/hash
file does not overlap, and renders veritysetup's report lines.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from trustpod.errors import ConfigError, DependencyError, EvidenceError
from trustpod.verity.core import SUPERBLOCK_SIZE, Superblock, TreeGeometry, VerityParams
from trustpod.verity.fileio import read_exact
from trustpod.verity.stream import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_WORKERS,
    Progress,
    format_tree,
    verify_tree,
)

__all__ = [
    "FormatResult",
    "describe",
    "format_files",
    "params_from_superblock",
    "read_superblock",
    "verify_files",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FormatResult:
    params: VerityParams
    geometry: TreeGeometry
    root_hash: bytes


def _open(path: Path, flags: int, what: str, mode: int = 0o600) -> int:
    try:
        return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), mode)
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} does not exist", reason="verity.no_such_file") from exc
    except OSError as exc:
        raise DependencyError(f"cannot open {what} {path}: {exc}", reason="verity.io") from exc


def _sequential(fd: int) -> None:
    """Tell the kernel the data is read once, front to back (bigger read-ahead when cold)."""
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:  # pipes and some devices refuse advice; it is only a hint
            pass


def _size(fd: int) -> int:
    """Size of a regular file or a block device (``st_size`` is 0 for the latter)."""
    return os.lseek(fd, 0, os.SEEK_END)


def _data_blocks(size: int, block_size: int, data_blocks: int | None, allow_partial: bool) -> int:
    # (1) explicit --data-blocks: the device must hold them; anything after is not covered
    if data_blocks is not None:
        if data_blocks * block_size > size:
            raise EvidenceError(
                f"data device is truncated: {data_blocks} blocks of {block_size} bytes need "
                f"{data_blocks * block_size} bytes, it has {size}",
                reason="verity.truncated",
            )
        return data_blocks
    # (2) veritysetup silently ignores a partial last block; we refuse unless asked (compat.md)
    if size % block_size:
        if not allow_partial:
            raise EvidenceError(
                f"data size {size} is not a multiple of the data block size {block_size}: the "
                f"last {size % block_size} bytes would not be protected",
                reason="verity.partial_block",
                fix="pad the image to a block multiple, pass --data-blocks N, or "
                "--allow-partial-tail to leave the tail unprotected like veritysetup",
            )
        log.warning("data tail of %d bytes is NOT covered by the hash tree", size % block_size)
    blocks = size // block_size
    if blocks == 0:
        raise EvidenceError(
            f"data device ({size} bytes) holds no full {block_size}-byte block",
            reason="verity.data_blocks",
            fix="the data device must hold at least one full data block",
        )
    return blocks


def format_files(
    data_path: Path,
    hash_path: Path,
    params: VerityParams,
    *,
    data_blocks: int | None = None,
    allow_partial_tail: bool = False,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: Progress | None = None,
    workers: int = DEFAULT_WORKERS,
) -> FormatResult:
    """``veritysetup format DATA HASH``; ``params.data_blocks`` is replaced from the data size."""
    data_fd = _open(data_path, os.O_RDONLY, "data device")
    _sequential(data_fd)
    try:
        size = _size(data_fd)
        params = replace(
            params,
            data_blocks=_data_blocks(size, params.data_block_size, data_blocks, allow_partial_tail),
        )
        hash_fd = _open(hash_path, os.O_RDWR | os.O_CREAT, "hash device")
        try:
            # (3) data and hash in one file: the hash area must start after the data area
            if os.path.samestat(os.fstat(data_fd), os.fstat(hash_fd)):
                end = params.data_blocks * params.data_block_size
                if params.hash_offset < end:
                    raise ConfigError(
                        f"data area (up to byte {end}) overlaps the hash area at "
                        f"{params.hash_offset}",
                        reason="verity.overlap",
                        fix=f"pass --hash-offset {end} or more, and --data-blocks",
                    )
            root, geo = format_tree(
                data_fd,
                hash_fd,
                params,
                chunk_bytes=chunk_bytes,
                progress=progress,
                workers=workers,
            )
        finally:
            os.close(hash_fd)
    finally:
        os.close(data_fd)
    return FormatResult(params, geo, root)


def read_superblock(hash_path: Path, hash_offset: int = 0) -> Superblock:
    fd = _open(hash_path, os.O_RDONLY, "hash device")
    try:
        return Superblock.from_bytes(read_exact(fd, SUPERBLOCK_SIZE, hash_offset, "hash device"))
    finally:
        os.close(fd)


def params_from_superblock(sb: Superblock, hash_offset: int = 0) -> VerityParams:
    return VerityParams(
        algorithm=sb.algorithm,
        data_block_size=sb.data_block_size,
        hash_block_size=sb.hash_block_size,
        data_blocks=sb.data_blocks,
        salt=sb.salt,
        uuid=sb.uuid,
        hash_type=sb.hash_type,
        hash_offset=hash_offset,
        superblock=True,
    )


def verify_files(
    data_path: Path,
    hash_path: Path,
    root_hash: bytes,
    params: VerityParams,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: Progress | None = None,
    workers: int = DEFAULT_WORKERS,
) -> TreeGeometry:
    """``veritysetup verify``: raise ``VerityCorruption`` (first bad block + level) or return."""
    if len(root_hash) != params.digest_size:
        raise ConfigError(
            f"root hash is {len(root_hash)} bytes, {params.algorithm} digests are "
            f"{params.digest_size}",
            reason="verity.root_hash",
        )
    data_fd = _open(data_path, os.O_RDONLY, "data device")
    _sequential(data_fd)
    try:
        size = _size(data_fd)
        if size < params.data_blocks * params.data_block_size:
            raise EvidenceError(
                f"data device is truncated: {size} bytes, the tree covers "
                f"{params.data_blocks * params.data_block_size}",
                reason="verity.truncated",
            )
        hash_fd = _open(hash_path, os.O_RDONLY, "hash device")
        try:
            geo = TreeGeometry.compute(params)
            hash_size = _size(hash_fd)
            if hash_size < geo.end_offset:
                raise EvidenceError(
                    f"hash device is truncated: {hash_size} bytes, the tree "
                    f"ends at {geo.end_offset}",
                    reason="verity.truncated",
                    fix="the hash device was not copied completely, or the parameters differ",
                )
            return verify_tree(
                data_fd,
                hash_fd,
                params,
                root_hash,
                chunk_bytes=chunk_bytes,
                progress=progress,
                workers=workers,
            )
        finally:
            os.close(hash_fd)
    finally:
        os.close(data_fd)


def describe(
    hash_path: str, params: VerityParams, geo: TreeGeometry, root_hash: bytes | None
) -> str:
    """The report veritysetup prints after ``format`` (root hash) or for ``dump`` (none)."""
    rows = [
        ("UUID:            ", params.uuid_text if params.superblock else ""),
        ("Hash type:       ", str(params.hash_type)),
        ("Data blocks:     ", str(params.data_blocks)),
        ("Data block size: ", str(params.data_block_size)),
        ("Hash blocks:     ", str(geo.hash_blocks)),
        ("Hash block size: ", str(params.hash_block_size)),
        ("Hash algorithm:  ", params.algorithm),
        ("Salt:            ", params.salt.hex() if params.salt else "-"),
    ]
    if root_hash is not None:
        rows.append(("Root hash:      ", root_hash.hex()))
    if params.hash_offset == 0:
        rows.append(("Hash device size: ", f"{geo.end_offset} [bytes]"))
    lines = [f"VERITY header information for {hash_path}"]
    lines += [f"{label}\t{value}" for label, value in rows]
    return "\n".join(lines) + "\n"
