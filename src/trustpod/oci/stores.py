"""The puller's local stores (I/O): key files for the host CLI and the blob cache.

``BlobCache`` holds verified blobs by digest (``<dir>/blobs/<algo>/<hex>``): a file gets its name
only after its size and digest were checked (``RegistryClient.stream_blob``), so whatever is
there under a digest is complete and checked.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import unquote, urlsplit

from trustpod.errors import ConfigError, NotFoundError
from trustpod.oci.manifest import Descriptor
from trustpod.oci.reference import ImageReference
from trustpod.oci.registry import RegistryClient

__all__ = ["BlobCache", "FileKeyLoader"]

log = logging.getLogger(__name__)


class FileKeyLoader:
    """``KeyLoader`` for ``file://`` URIs and plain paths (the host CLI; no KBS)."""

    def __init__(self, max_bytes: int = 1024 * 1024) -> None:
        self._max = max_bytes

    def load_key(self, key_path: str) -> bytes:
        if key_path.startswith(("kbs://", "kbs+")):
            raise ConfigError(
                f"key {key_path} is a KBS resource; only the guest puller can fetch it",
                reason="image.key_path",
                fix="use a file path for offline pulls",
            )
        path = (
            Path(unquote(urlsplit(key_path).path))
            if key_path.startswith("file://")
            else Path(key_path)
        )
        try:
            with path.open("rb") as f:
                data = f.read(self._max + 1)
        except OSError as exc:
            raise NotFoundError(
                f"cannot read key {key_path}: {exc}", reason="image.key_missing"
            ) from exc
        if len(data) > self._max:
            raise ConfigError(
                f"key {key_path} is larger than {self._max} bytes", reason="image.key_path"
            )
        return data


class BlobCache:
    """Verified blobs by digest: ``<dir>/blobs/<algo>/<hex>`` (only complete, checked files)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, digest: str) -> Path:
        algo, hexpart = digest.split(":", 1)
        d = self.directory / "blobs" / algo
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d / hexpart

    def cached(self, desc: Descriptor) -> Path | None:
        path = self.path(desc.digest)
        if path.is_file() and path.stat().st_size == desc.size:
            log.debug("blob %s from cache", desc.digest)
            return path
        return None

    def ensure(self, registry: RegistryClient, image: ImageReference, desc: Descriptor) -> Path:
        path = self.cached(desc)
        if path is None:
            path = self.path(desc.digest)
            registry.fetch_blob(image, desc, path)
        return path
