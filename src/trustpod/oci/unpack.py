"""Apply verified layer blobs to a root filesystem (image-spec layer.md changesets) — I/O.

For each layer (a digest-checked cache file, or the registry stream whose digest the puller
checks before the rootfs is committed, ADR 1000): decompress (gzip via ISA-L's ``isal_zlib``
when installed, else ``zlib``; zstd via ``zstandard``) while hashing the tar stream, which must
equal the config's ``diff_id``; walk the tar forward-only (``tarfile`` parses the headers; file
contents are copied from the decompressed chunks straight to the file, one pass, no re-buffering)
and apply each entry:

* names are normalized (``./``, leading ``/``); ``..`` components, paths through a symlink of the
  rootfs, hard links leaving the rootfs and over-long paths are refused (``image.layer_unsafe``);
* ``.wh.<name>`` deletes ``<name>`` from lower layers; ``.wh..wh..opq`` empties its directory of
  lower-layer entries (entries of the same layer survive, whatever the order in the tar);
* regular files, directories, symlinks, hard links, FIFOs; device nodes when permitted;
  ownership only when running as root; modes incl. setuid; mtimes (not for directories);
  extended attributes are not applied.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from trustpod.errors import EvidenceError, VerificationError
from trustpod.oci.layerstream import (
    INFLATE_ERRORS,
    ByteSource,
    HashedChunks,
    ReadAhead,
    TarStream,
    UnpackBudget,
    ZstdFormatError,
    decompressed_chunks,
)
from trustpod.oci.settings import OciSettings

_FORMAT_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    OSError,
    EOFError,
    ZstdFormatError,
    *INFLATE_ERRORS,
)

__all__ = ["UnpackBudget", "remove_tree", "unpack_layer"]


log = logging.getLogger(__name__)

_OPAQUE = ".wh..wh..opq"
_WH = ".wh."


def _unsafe(msg: str) -> EvidenceError:
    return EvidenceError(f"layer entry refused: {msg}", reason="image.layer_unsafe")


def _parts(name: str, settings: OciSettings) -> list[str]:
    if len(name.encode()) > settings.max_path_bytes:
        raise _unsafe(f"path longer than {settings.max_path_bytes} bytes")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _unsafe(f"{name!r} has a '..' component")
    return parts


@dataclass
class _Layer:
    root: Path
    settings: OciSettings
    safe_dirs: set[str] = field(default_factory=set)
    created: set[str] = field(default_factory=set)

    def parent(self, parts: list[str]) -> Path:
        """The parent directory of ``parts``, created as needed, never through a symlink."""
        cur = self.root
        for i, comp in enumerate(parts[:-1]):
            cur = cur / comp
            key = "/".join(parts[: i + 1])
            if key in self.safe_dirs:
                continue
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                os.mkdir(cur, 0o755)
                self.created.add(key)
            else:
                if stat.S_ISLNK(st.st_mode):
                    raise _unsafe(f"{'/'.join(parts)!r} goes through the symlink {key!r}")
                if not stat.S_ISDIR(st.st_mode):
                    raise _unsafe(f"{'/'.join(parts)!r}: {key!r} is not a directory")
            self.safe_dirs.add(key)
        return cur

    def forget(self, key: str) -> None:
        self.safe_dirs = {d for d in self.safe_dirs if d != key and not d.startswith(key + "/")}

    def remove(self, path: Path, key: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            remove_tree(path)
        else:
            os.unlink(path)
        self.forget(key)


def remove_tree(path: Path) -> None:
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            remove_tree(Path(entry.path))
        else:
            os.unlink(entry.path)
    os.rmdir(path)


def _apply_meta(path: Path, m: tarfile.TarInfo, *, is_link: bool) -> None:
    if os.geteuid() == 0:
        os.lchown(path, m.uid, m.gid)
    if not is_link:
        os.chmod(path, m.mode & 0o7777)
        if not m.isdir():
            os.utime(path, (m.mtime, m.mtime))


def _entry(layer: _Layer, src: TarStream, m: tarfile.TarInfo) -> None:
    parts = _parts(m.name, layer.settings)
    if not parts:
        return  # the root entry itself
    base = parts[-1]
    parent = layer.parent(parts)
    key = "/".join(parts)
    if base == _OPAQUE:
        prefix = "/".join(parts[:-1])
        for child in os.listdir(parent):
            ckey = f"{prefix}/{child}" if prefix else child
            if ckey not in layer.created:
                layer.remove(parent / child, ckey)
        return
    if base.startswith(_WH):
        target = base[len(_WH) :]
        if not target or target in (".", ".."):
            raise _unsafe(f"bad whiteout {m.name!r}")
        tkey = "/".join([*parts[:-1], target])
        layer.remove(parent / target, tkey)
        return
    path = parent / base
    existing = None
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        pass
    if existing is not None and not (m.isdir() and stat.S_ISDIR(existing.st_mode)):
        layer.remove(path, key)
    layer.created.add(key)
    if m.isdir():
        if existing is None or not stat.S_ISDIR(existing.st_mode):
            os.mkdir(path, 0o700)
        _apply_meta(path, m, is_link=False)
        layer.safe_dirs.add(key)
    elif m.isreg():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            if src.tell() != m.offset_data:
                raise _unsafe(f"{m.name!r}: data not where its header says")
            if m.sparse is None:
                src.copy_to(fd, m.size)
            else:  # GNU sparse: the stored pieces at their offsets, holes left as holes
                for offset, size in cast("list[tuple[int, int]]", m.sparse):
                    os.lseek(fd, offset, os.SEEK_SET)
                    src.copy_to(fd, size)
                os.ftruncate(fd, m.size)
        finally:
            os.close(fd)
        _apply_meta(path, m, is_link=False)
    elif m.issym():
        os.symlink(m.linkname, path)
        layer.forget(key)
        _apply_meta(path, m, is_link=True)
    elif m.islnk():
        lparts = _parts(m.linkname, layer.settings)
        if not lparts:
            raise _unsafe(f"hard link {m.name!r} to the root")
        lparent = layer.parent(lparts)
        link_target = lparent / lparts[-1]
        if stat.S_ISDIR(os.lstat(link_target).st_mode):
            raise _unsafe(f"hard link {m.name!r} to a directory")
        os.link(link_target, path, follow_symlinks=False)
    elif m.isfifo():
        os.mkfifo(path, m.mode & 0o777)
        _apply_meta(path, m, is_link=False)
    elif m.ischr() or m.isblk():
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        try:
            os.mknod(path, kind | (m.mode & 0o777), os.makedev(m.devmajor, m.devminor))
            _apply_meta(path, m, is_link=False)
        except PermissionError:
            log.debug("device node %s skipped (not permitted)", key)
    else:
        raise _unsafe(f"{m.name!r} has unsupported tar type {m.type!r}")


def unpack_layer(
    blob: Path | ByteSource,
    compression: str,
    diff_id: str,
    rootfs: Path,
    budget: UnpackBudget,
    *,
    name: str | None = None,
) -> None:
    """Apply one layer blob (a file, or an open stream: the registry response, a decrypting
    reader; anything with ``read(n)``) to ``rootfs``; the tar stream must hash to ``diff_id``.
    The whole blob is consumed."""
    layer = _Layer(rootfs, budget.settings)
    label = name or (blob.name if isinstance(blob, Path) else "stream")
    with blob.open("rb") if isinstance(blob, Path) else contextlib.nullcontext(blob) as f:
        algorithm = diff_id.split(":", 1)[0]
        hashed = HashedChunks(decompressed_chunks(f, compression), budget, algorithm)
        depth = budget.settings.decompress_ahead_chunks
        ahead = ReadAhead(hashed, depth) if depth > 0 else None
        src = TarStream(ahead or hashed, budget)
        try:
            # "r:" over the forward-only stream: tarfile parses headers, _entry copies contents
            with tarfile.open(fileobj=src, mode="r:") as tar:  # type: ignore[call-overload]
                while (m := tar.next()) is not None:
                    tar.members.clear()  # nothing looks members up; keep memory flat
                    budget.entries += 1
                    if budget.entries > budget.settings.max_tar_entries:
                        raise EvidenceError(
                            f"image has more than {budget.settings.max_tar_entries} entries",
                            reason="image.too_large",
                        )
                    _entry(layer, src, m)
            src.drain()
        except _FORMAT_ERRORS as exc:
            if isinstance(exc, FileExistsError | PermissionError | IsADirectoryError):
                raise _unsafe(str(exc)) from exc
            raise EvidenceError(f"layer {label}: {exc}", reason="image.layer_format") from exc
        finally:
            if ahead is not None:
                ahead.close()  # before the source is closed or handed back
    got = f"{algorithm}:{hashed.hash.hexdigest()}"
    if got != diff_id:
        raise VerificationError(
            f"layer {label} unpacks to {got}, the config says {diff_id}",
            reason="image.diff_id_mismatch",
        )
