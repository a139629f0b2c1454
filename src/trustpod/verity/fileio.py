"""Exact positional reads and writes on file descriptors, with trustpod errors."""

from __future__ import annotations

import os

from trustpod.errors import DependencyError, EvidenceError

__all__ = ["read_exact", "read_scatter", "write_all"]


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


def read_scatter(fd: int, views: list[memoryview], offset: int, what: str) -> None:
    """Fill every buffer of ``views`` in order from ``offset`` (one ``preadv``, one iovec per
    buffer; a short read continues where it stopped)."""
    need = sum(len(v) for v in views)
    got = 0
    pending = views
    while got < need:
        try:
            n = os.preadv(fd, pending, offset + got)
        except OSError as exc:
            raise DependencyError(f"cannot read {what}: {exc}", reason="verity.io") from exc
        if n == 0:
            raise EvidenceError(
                f"{what} is truncated: needed {need} bytes at offset {offset}, got {got}",
                reason="verity.truncated",
                fix="the file is shorter than its verity parameters say; was it copied completely?",
            )
        got += n
        if got < need:  # rare: drop the filled buffers, cut the partly filled one
            rest: list[memoryview] = []
            for v in pending:
                if n >= len(v):
                    n -= len(v)
                    continue
                rest.append(v[n:])
                n = 0
            pending = rest


def write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.pwrite(fd, view, offset)
        except OSError as exc:
            raise DependencyError(f"cannot write hash device: {exc}", reason="verity.io") from exc
        view = view[n:]
        offset += n
