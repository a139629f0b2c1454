"""A layer's bytes on their way to the tar walk (I/O helpers of ``trustpod.oci.unpack``).

``decompressed_chunks`` turns a ``ByteSource`` (cache file, ``BlobStream``, decrypting reader)
into bounded decompressed chunks: gzip through ISA-L's ``isal_zlib`` when installed (~4x zlib's
inflate on x86-64, same format checks), else ``zlib``; zstd through ``zstandard``; plain tar as
is. ``HashedChunks`` hashes each chunk once (the diff_id) and counts it against the image's
``UnpackBudget``; ``ReadAhead`` runs that in a helper thread a few chunks ahead (C code that
releases the GIL); ``TarStream`` presents the chunks to ``tarfile`` as a forward-only file and
copies member contents to their files without intermediate copies.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import IO, Protocol, cast

from trustpod.errors import EvidenceError
from trustpod.oci.settings import OciSettings

_inflate: ModuleType
try:  # ISA-L inflate is ~4x zlib's on x86-64; same API, same format checks
    from isal import isal_zlib as _inflate

    _INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, _inflate.error)
except ImportError:  # pragma: no cover - isal is a dependency of the guest extra
    _inflate = zlib
    _INFLATE_ERRORS = (zlib.error,)

__all__ = [
    "INFLATE_ERRORS",
    "ByteSource",
    "HashedChunks",
    "ReadAhead",
    "TarStream",
    "UnpackBudget",
    "ZstdFormatError",
    "decompressed_chunks",
]

INFLATE_ERRORS = _INFLATE_ERRORS


class ByteSource(Protocol):
    """What a layer is read from: a file, ``BlobStream``, a decrypting reader."""

    def read(self, n: int = -1, /) -> bytes: ...


@dataclass
class UnpackBudget:
    """Counts shared by all layers of one image (``max_unpacked_bytes``, ``max_tar_entries``)."""

    settings: OciSettings
    bytes: int = 0
    entries: int = 0


#: Decompressed bytes handed over at once (bounds memory whatever the compression ratio).
_CHUNK = 1 << 20
_READ = 1 << 20


class TarStream:
    """The decompressed tar (chunks hashed and counted by ``HashedChunks``) as a forward-only
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


class HashedChunks:
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


class ReadAhead:
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


class ZstdFormatError(ValueError):
    """A zstd layer that does not decode (``zstandard.ZstdError``, kept out of the imports)."""


class _Unzstd:
    """zstd frames through ``zstandard`` (imported for zstd layers only: ~10 ms of start-up)."""

    def __init__(self, raw: ByteSource) -> None:
        import zstandard

        self._error = zstandard.ZstdError
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            cast("IO[bytes]", raw), read_across_frames=True
        )

    def __call__(self) -> bytes:
        try:
            return bytes(self._reader.read(_CHUNK))
        except self._error as exc:
            raise ZstdFormatError(f"zstd: {exc}") from exc


def decompressed_chunks(f: ByteSource, compression: str) -> Callable[[], bytes]:
    if compression == "gzip":
        return _Gunzip(f)
    if compression == "zstd":
        return _Unzstd(f)
    return lambda: f.read(_READ)
