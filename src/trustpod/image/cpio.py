"""A reproducible ``newc`` cpio archive (the initramfs format the kernel unpacks). Pure.

Format (kernel ``Documentation/driver-api/early-userspace/buffer-format.rst``): each entry is
the magic ``070701``, 13 eight-digit hex fields (ino, mode, uid, gid, nlink, mtime, filesize,
devmajor, devminor, rdevmajor, rdevminor, namesize incl. NUL, check=0), the NUL-terminated
name padded to 4 bytes, then the data padded to 4 bytes; ``TRAILER!!!`` ends the archive.
Entries are written sorted by name (parents first), owned by root, with one fixed mtime and
inode numbers in order, so the same tree gives the same bytes.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

__all__ = ["CpioEntry", "newc_archive"]

_TRAILER = "TRAILER!!!"


@dataclass(frozen=True, slots=True)
class CpioEntry:
    """One archive member: ``path`` without a leading slash; ``data`` is a symlink's target
    for ``S_IFLNK``; directories have no data."""

    path: str
    mode: int
    data: bytes = b""


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, mode: int, nlink: int, mtime: int, size: int, namesize: int) -> bytes:
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, 0, 0, namesize, 0)
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def newc_archive(entries: list[CpioEntry], mtime: int = 0) -> bytes:
    """The archive bytes; duplicate paths and paths with ``..`` are refused."""
    seen: set[str] = set()
    out = bytearray()
    for ino, entry in enumerate(sorted(entries, key=lambda e: e.path.split("/")), start=1):
        path = entry.path.strip("/")
        if not path or path in seen or ".." in path.split("/"):
            raise ValueError(f"bad or duplicate cpio path {entry.path!r}")
        seen.add(path)
        if stat.S_ISDIR(entry.mode) and entry.data:
            raise ValueError(f"directory {path!r} with data")
        name = path.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        out += _header(ino, entry.mode, nlink, mtime, len(entry.data), len(name))
        out += name + _pad(110 + len(name))
        out += entry.data + _pad(len(entry.data))
    name = _TRAILER.encode() + b"\0"
    out += _header(0, 0, 1, 0, 0, len(name)) + name + _pad(110 + len(name))
    return bytes(out)
