"""Exact positional reads and writes on file descriptors, with trustpod errors."""

from __future__ import annotations

import os

from trustpod.errors import DependencyError, EvidenceError

__all__ = ["read_exact", "read_into", "write_all"]


def read_exact(fd: int, size: int, offset: int, what: str) -> bytes:
    """``pread`` exactly ``size`` bytes or raise a truncation error naming ``what``."""
    parts: list[bytes] = []
    got = 0
    while got < size:
        try:
            chunk = os.pread(fd, size - got, offset + got)
        except OSError as exc:
            raise DependencyError(f"cannot read {what}: {exc}", reason="verity.io") from exc
        if not chunk:
            raise EvidenceError(
                f"{what} is truncated: needed {size} bytes at offset {offset}, got {got}",
                reason="verity.truncated",
                fix="the file is shorter than its verity parameters say; was it copied completely?",
            )
        parts.append(chunk)
        got += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_into(fd: int, view: memoryview, offset: int, what: str) -> None:
    got = 0
    while got < len(view):
        try:
            n = os.preadv(fd, [view[got:]], offset + got)
        except OSError as exc:
            raise DependencyError(f"cannot read {what}: {exc}", reason="verity.io") from exc
        if n == 0:
            raise EvidenceError(
                f"{what} is truncated: needed {len(view)} bytes at offset {offset}, got {got}",
                reason="verity.truncated",
                fix="the file is shorter than its verity parameters say; was it copied completely?",
            )
        got += n


def write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.pwrite(fd, view, offset)
        except OSError as exc:
            raise DependencyError(f"cannot write hash device: {exc}", reason="verity.io") from exc
        view = view[n:]
        offset += n
