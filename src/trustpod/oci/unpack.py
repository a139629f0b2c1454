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
import hashlib
import logging
import os
import queue
import stat
import tarfile
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Protocol, cast

import zstandard

from trustpod.errors import EvidenceError, VerificationError
from trustpod.oci.settings import OciSettings

_inflate: ModuleType
try:  # ISA-L inflate is ~4x zlib's on x86-64; same API, same format checks
    from isal import isal_zlib as _inflate

    _INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, _inflate.error)
except ImportError:  # pragma: no cover - isal is a dependency of the guest extra
    _inflate = zlib
    _INFLATE_ERRORS = (zlib.error,)
_FORMAT_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    OSError,
    EOFError,
    zstandard.ZstdError,
    *_INFLATE_ERRORS,
)

__all__ = ["ByteSource", "UnpackBudget", "remove_tree", "unpack_layer"]


class ByteSource(Protocol):
    """What a layer is read from: a file, ``BlobStream``, a decrypting reader."""

    def read(self, n: int = -1, /) -> bytes: ...


log = logging.getLogger(__name__)

_OPAQUE = ".wh..wh..opq"
_WH = ".wh."


@dataclass
class UnpackBudget:
    """Counts shared by all layers of one image (``max_unpacked_bytes``, ``max_tar_entries``)."""

    settings: OciSettings
    bytes: int = 0
    entries: int = 0


#: Decompressed bytes handed over at once (bounds memory whatever the compression ratio).
_CHUNK = 4 << 20
_READ = 1 << 20


class _TarStream:
    """The decompressed tar (chunks already hashed and counted by ``_Hashed``) as a forward-only
    file for ``tarfile`` (``read``/``tell``/``seek`` ahead); ``copy_to`` writes a member's
    contents from the decompressed chunks without copies."""

    def __init__(self, chunks: Callable[[], bytes], budget: UnpackBudget) -> None:
        self._next, self._budget = chunks, budget
        self._buf = memoryview(b"")
        self._pos = 0  # stream offset of self._buf[0:]

    def _fill(self) -> bool:
        data = self._next()
        if not data:
            return False
        self._buf = memoryview(data)
        return True

    def read(self, n: int = -1) -> bytes:
        # contents go through copy_to/skip: read() is only ever for headers (pax records, GNU
        # long names, sparse maps), which must not make us buffer a huge "header" in memory
        limit = self._budget.settings.max_tar_header_bytes
        if n < 0 or n > limit:
            raise EvidenceError(
                f"tar header record of {n} bytes (limit {limit})", reason="image.too_large"
            )
        if n <= len(self._buf):
            out = bytes(self._buf[:n])
            self._buf = self._buf[n:]
            self._pos += n
            return out
        parts = [bytes(self._buf)]
        got = len(self._buf)
        self._pos += got
        self._buf = memoryview(b"")
        while got < n and self._fill():
            take = self._buf[: n - got]
            parts.append(bytes(take))
            got += len(take)
            self._pos += len(take)
            self._buf = self._buf[len(take) :]
        return b"".join(parts)

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self._pos:
            raise OSError("layer tar is read forward only")
        self.skip(pos - self._pos)
        return self._pos

    def skip(self, n: int) -> None:
        while n > 0:
            if not self._buf and not self._fill():
                raise EOFError("tar stream ends early")
            take = min(n, len(self._buf))
            self._buf = self._buf[take:]
            self._pos += take
            n -= take

    def copy_to(self, fd: int, n: int) -> None:
        """Write the next ``n`` bytes to ``fd``."""
        while n > 0:
            if not self._buf and not self._fill():
                raise EOFError("tar stream ends early")
            view = self._buf[:n]
            done = 0
            while done < len(view):
                done += os.write(fd, view[done:])
            self._buf = self._buf[done:]
            self._pos += done
            n -= done

    def drain(self) -> None:
        """Hash the rest (end-of-archive blocks, padding) so the diff_id covers every byte."""
        self._pos += len(self._buf)
        self._buf = memoryview(b"")
        while self._fill():
            self._pos += len(self._buf)
            self._buf = memoryview(b"")


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


def _entry(layer: _Layer, src: _TarStream, m: tarfile.TarInfo) -> None:
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


class _Hashed:
    """Decompressed chunks, each hashed once for the diff_id and counted against the budget."""

    def __init__(self, chunks: Callable[[], bytes], budget: UnpackBudget, algorithm: str) -> None:
        self._chunks, self._budget = chunks, budget
        self.hash = hashlib.new(algorithm)

    def __call__(self) -> bytes:
        data = self._chunks()
        self.hash.update(data)
        b = self._budget
        b.bytes += len(data)
        if b.bytes > b.settings.max_unpacked_bytes:
            raise EvidenceError(
                f"image unpacks to more than {b.settings.max_unpacked_bytes} bytes",
                reason="image.too_large",
            )
        return data


class _Ahead:
    """Run ``chunks`` (read, decompress, hash: C code that releases the GIL) in a helper thread,
    at most ``depth`` chunks ahead of the tar walk; its exceptions surface in the caller."""

    def __init__(self, chunks: Callable[[], bytes], depth: int) -> None:
        self._q: queue.Queue[tuple[bytes, BaseException | None]] = queue.Queue(depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(chunks,), daemon=True)
        self._thread.start()

    def _run(self, chunks: Callable[[], bytes]) -> None:
        try:
            while not self._stop.is_set():
                data = chunks()
                self._q.put((data, None))
                if not data:
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._q.put((b"", exc))

    def __call__(self) -> bytes:
        if self._done:
            return b""
        data, exc = self._q.get()
        if exc is not None:
            self._done = True
            raise exc
        self._done = not data
        return data

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a put() on a full queue
            with contextlib.suppress(queue.Empty):
                self._q.get(timeout=0.01)
        self._thread.join()


class _Gunzip:
    """gzip members (ISA-L or zlib), each call one bounded output chunk. Zero padding after the
    last member is ignored, as ``gzip`` does; anything else after it is another member."""

    def __init__(self, raw: ByteSource) -> None:
        self._raw = raw
        self._z = _inflate.decompressobj(wbits=31)

    def __call__(self) -> bytes:
        while True:
            z = self._z
            if z.eof:
                rest = z.unused_data.lstrip(b"\0")
                while not rest:
                    more = self._raw.read(_READ)
                    if not more:
                        return b""
                    rest = more.lstrip(b"\0")
                self._z = z = _inflate.decompressobj(wbits=31)  # another gzip member
                data = z.decompress(rest, _CHUNK)
            elif z.unconsumed_tail:
                data = z.decompress(z.unconsumed_tail, _CHUNK)
            else:
                chunk = self._raw.read(_READ)
                if not chunk:
                    raise EOFError("gzip stream ends early")
                data = z.decompress(chunk, _CHUNK)
            if data:
                return bytes(data)


def _chunks(f: ByteSource, compression: str) -> Callable[[], bytes]:
    if compression == "gzip":
        return _Gunzip(f)
    if compression == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(
            cast("IO[bytes]", f), read_across_frames=True
        )
        return lambda: bytes(reader.read(_CHUNK))
    return lambda: f.read(_READ)


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
        hashed = _Hashed(_chunks(f, compression), budget, algorithm)
        depth = budget.settings.decompress_ahead_chunks
        ahead = _Ahead(hashed, depth) if depth > 0 else None
        src = _TarStream(ahead or hashed, budget)
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
