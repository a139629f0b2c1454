"""Apply verified layer blobs to a root filesystem (image-spec layer.md changesets) — I/O.

For each layer (already digest-checked in the cache): decompress (gzip via zlib, zstd via
``zstandard``) while hashing the tar stream, which must equal the config's ``diff_id``; walk the
tar in stream mode and apply each entry:

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
import hashlib
import logging
import os
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zstandard

from trustpod.errors import EvidenceError, VerificationError
from trustpod.oci.settings import OciSettings

__all__ = ["UnpackBudget", "remove_tree", "unpack_layer"]

log = logging.getLogger(__name__)

_OPAQUE = ".wh..wh..opq"
_WH = ".wh."


@dataclass
class UnpackBudget:
    """Counts shared by all layers of one image (``max_unpacked_bytes``, ``max_tar_entries``)."""

    settings: OciSettings
    bytes: int = 0
    entries: int = 0


class _HashingReader:
    def __init__(self, raw: IO[bytes], budget: UnpackBudget, algorithm: str) -> None:
        self._raw, self._budget = raw, budget
        self.hash = hashlib.new(algorithm)

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.hash.update(data)
        self._budget.bytes += len(data)
        if self._budget.bytes > self._budget.settings.max_unpacked_bytes:
            raise EvidenceError(
                f"image unpacks to more than {self._budget.settings.max_unpacked_bytes} bytes",
                reason="image.too_large",
            )
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


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


def _entry(layer: _Layer, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
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
        src = tar.extractfile(m)
        assert src is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
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


class _GzipReader:
    """gzip members via zlib directly, returning what one ``decompress`` call yields (short reads,
    no re-buffering copies: ``GzipFile`` and a joined buffer were the unpacking bottleneck).
    Zero padding after the last member is ignored, as ``gzip`` does."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._z = zlib.decompressobj(wbits=31)

    def read(self, n: int = -1) -> bytes:
        want = n if n > 0 else 1 << 20
        while True:
            z = self._z
            if z.eof:
                rest = z.unused_data.lstrip(b"\0")
                while not rest:
                    more = self._raw.read(1 << 20)
                    if not more:
                        return b""
                    rest = more.lstrip(b"\0")
                self._z = z = zlib.decompressobj(wbits=31)  # another gzip member
                data = z.decompress(rest, want)
            elif z.unconsumed_tail:
                data = z.decompress(z.unconsumed_tail, want)
            else:
                chunk = self._raw.read(1 << 20)
                if not chunk:
                    raise EOFError("gzip stream ends early")
                data = z.decompress(chunk, want)
            if data:
                return data


def _decompressor(f: IO[bytes], compression: str) -> Any:
    if compression == "gzip":
        return _GzipReader(f)
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
    return f


def unpack_layer(
    blob: Path | IO[bytes],
    compression: str,
    diff_id: str,
    rootfs: Path,
    budget: UnpackBudget,
    *,
    name: str | None = None,
) -> None:
    """Apply one verified layer blob (a file, or an open stream such as a decrypted buffer) to
    ``rootfs``; the tar stream must hash to ``diff_id``."""
    layer = _Layer(rootfs, budget.settings)
    label = name or (blob.name if isinstance(blob, Path) else "stream")
    with blob.open("rb") if isinstance(blob, Path) else contextlib.nullcontext(blob) as f:
        algorithm = diff_id.split(":", 1)[0]
        reader = _HashingReader(_decompressor(f, compression), budget, algorithm)
        try:
            with tarfile.open(fileobj=reader, mode="r|", bufsize=1 << 20) as tar:  # type: ignore[call-overload]
                for m in tar:
                    budget.entries += 1
                    if budget.entries > budget.settings.max_tar_entries:
                        raise EvidenceError(
                            f"image has more than {budget.settings.max_tar_entries} entries",
                            reason="image.too_large",
                        )
                    _entry(layer, tar, m)
            reader.drain()
        except (tarfile.TarError, OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
            if isinstance(exc, FileExistsError | PermissionError | IsADirectoryError):
                raise _unsafe(str(exc)) from exc
            raise EvidenceError(f"layer {label}: {exc}", reason="image.layer_format") from exc
    got = f"{algorithm}:{reader.hash.hexdigest()}"
    if got != diff_id:
        raise VerificationError(
            f"layer {label} unpacks to {got}, the config says {diff_id}",
            reason="image.diff_id_mismatch",
        )
