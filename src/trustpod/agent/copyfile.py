"""CopyFile (kata ``do_copy_file``): write a file the host sends into the shared directory.

kata accepts only paths under ``/run/kata-containers/shared/containers/`` and resolves them
inside that root without following symlinks (``pathrs``). Here the root is
``<run_dir>/shared/containers`` and every component is opened with ``O_NOFOLLOW`` relative to
its parent's fd, so a symlink planted by an earlier CopyFile cannot lead outside.

1. directory mode (``S_IFDIR`` in ``file_mode``): create it (an existing file is replaced);
2. symlink mode (``S_IFLNK``): ``data`` is the link target;
3. regular file: chunks are written at ``offset`` into ``<name>.tmp``; when the temp file
   reaches ``file_size`` it gets ``file_mode``/``uid``/``gid`` and is renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Any

from trustpod.errors import EvidenceError

__all__ = ["copy_file"]

_PERM_MASK = 0o7777
_DIR_MASK = 0o777


def _components(rel: str) -> list[str]:
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise EvidenceError(f"CopyFile path {rel!r} is not canonical", reason="agent.copy_path")
    return parts


def _open_dir(root_fd: int, parts: list[str], mode: int) -> int:
    fd = os.dup(root_fd)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, mode, dir_fd=fd)
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove(dir_fd: int, name: str) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            for entry in os.listdir(sub):
                _remove(sub, entry)
        finally:
            os.close(sub)
        os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def copy_file(root: Path, rel: str, req: Any, *, max_bytes: int) -> None:
    """Apply one CopyFileRequest at ``root/rel`` (``rel`` relative to the shared root)."""
    parts = _components(rel)
    if req.file_size < 0 or req.offset < 0 or req.file_size > max_bytes:
        raise EvidenceError(
            f"CopyFile size {req.file_size} is not within 0..{max_bytes}", reason="agent.copy_size"
        )
    regular = not (stat.S_ISLNK(req.file_mode) or stat.S_ISDIR(req.file_mode))
    if regular and req.offset + len(req.data) > req.file_size:
        raise EvidenceError("CopyFile chunk goes past file_size", reason="agent.copy_size")
    root.mkdir(parents=True, exist_ok=True, mode=0o755)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        parent = _open_dir(root_fd, parts[:-1], req.dir_mode & _DIR_MASK or 0o750)
        try:
            if len(parts) > 1:
                os.chown(parent, req.uid, req.gid)
            _apply(parent, parts[-1], req)
        finally:
            os.close(parent)
    finally:
        os.close(root_fd)


def _apply(parent: int, name: str, req: Any) -> None:
    mode = req.file_mode
    if stat.S_ISDIR(mode):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode & _DIR_MASK, dir_fd=parent)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        try:
            os.fchmod(fd, mode & _PERM_MASK)
            os.fchown(fd, req.uid, req.gid)
        finally:
            os.close(fd)
        return
    if req.offset == 0:
        _remove(parent, name)
    if stat.S_ISLNK(mode):
        os.symlink(bytes(req.data).decode("utf-8", "surrogateescape"), name, dir_fd=parent)
        os.chown(name, req.uid, req.gid, dir_fd=parent, follow_symlinks=False)
        return
    tmp = f"{name}.tmp" if "." not in name else f"{name.rsplit('.', 1)[0]}.tmp"
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    if req.offset == 0:
        flags |= os.O_TRUNC
    fd = os.open(tmp, flags, mode & _PERM_MASK & 0o777, dir_fd=parent)
    try:
        os.pwrite(fd, bytes(req.data), req.offset)
        if os.fstat(fd).st_size != req.file_size:
            return
        os.fchmod(fd, mode & _PERM_MASK)
        os.fchown(fd, req.uid, req.gid)
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
