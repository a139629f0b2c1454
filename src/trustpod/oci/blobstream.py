"""A registry blob response as a verified-at-the-end reader (I/O; used by ``registry``).

Every received chunk is hashed, counted against the descriptor's size (more is refused at once)
and, when a tee file is given, written to it; ``finish`` reads the rest and compares size and
digest. Until ``finish`` returns, nothing read may be trusted: the puller unpacks from it only
into ``rootfs.partial`` (ADR 1000).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

from trustpod.errors import VerificationError
from trustpod.oci.manifest import Descriptor
from trustpod.oci.reference import ImageReference

__all__ = ["BlobStream"]


class BlobStream:
    """A blob response as a reader: ``read(n)`` gives at most ``n`` received bytes (b"" at the
    end), each hashed, counted against the descriptor's size and written to the tee file.
    ``finish()`` reads what is left and raises ``image.digest_mismatch`` unless the bytes are
    exactly the descriptor's; until then nothing read may be trusted."""

    def __init__(
        self, chunks: Iterator[bytes], image: ImageReference, desc: Descriptor, tee_fd: int
    ) -> None:
        self._chunks, self._image, self._desc, self._fd = chunks, image, desc, tee_fd
        self.algorithm = desc.digest.split(":", 1)[0]
        self._hash = hashlib.new(self.algorithm)
        self._left = memoryview(b"")
        self._size = 0
        self._verified = False

    def _next(self) -> bytes:
        chunk = next(self._chunks, b"")  # transport errors arrive as image.registry
        self._size += len(chunk)
        if self._size > self._desc.size:
            raise VerificationError(
                f"blob {self._desc.digest} exceeds its descriptor ({self._desc.size} bytes)",
                reason="image.digest_mismatch",
            )
        self._hash.update(chunk)
        if self._fd >= 0:
            view = memoryview(chunk)
            done = 0
            while done < len(view):
                done += os.write(self._fd, view[done:])
        return chunk

    def read(self, n: int = -1) -> bytes:
        if not self._left:
            chunk = self._next()
            if n < 0 or len(chunk) <= n:
                return chunk
            self._left = memoryview(chunk)
        take = self._left if n < 0 else self._left[:n]
        self._left = self._left[len(take) :]
        return bytes(take)

    def finish(self) -> None:
        """Read the rest; raise unless size and digest are the descriptor's (idempotent)."""
        if self._verified:
            return
        self._left = memoryview(b"")
        while self._next():
            pass
        if (
            self._size != self._desc.size
            or f"{self.algorithm}:{self._hash.hexdigest()}" != self._desc.digest
        ):
            raise VerificationError(
                f"blob {self._desc.digest} of {self._image} does not match its digest",
                reason="image.digest_mismatch",
            )
        self._verified = True
