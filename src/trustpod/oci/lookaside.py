"""Signature sources for the decision (I/O): lookaside stores and the registry's ``.sig`` tags.

* Simple signing: ``signature-1``, ``signature-2``, … under the store's per-digest directory
  until the first missing one (containers/image), over ``file://`` (image-rs: the only scheme it
  implements) or ``http(s)://`` (our addition; 404 ends the list).
* Cosign: the ``sha256-<hex>.sig`` manifest from the image's own repository, each payload layer
  fetched with its digest checked (``RegistryClient.get_blob``); no ``.sig`` tag = no signatures.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from trustpod.errors import DependencyError, EvidenceError, NotFoundError
from trustpod.oci.cosign import signature_layers, signature_tag
from trustpod.oci.manifest import ImageManifest
from trustpod.oci.reference import ImageReference
from trustpod.oci.registry import RegistryClient
from trustpod.oci.sigstore_config import SigstoreConfig, signature_url

if TYPE_CHECKING:  # httpx is imported for http(s) signature stores only (CLI start-up time)
    import httpx

__all__ = ["RegistrySignatureSource", "read_url"]

log = logging.getLogger(__name__)


def read_url(url: str, limit: int, *, client: httpx.Client | None = None) -> bytes | None:
    """Bytes at a ``file://`` or ``http(s)://`` URL (None when absent), at most ``limit``."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise DependencyError(f"cannot read {path}: {exc}", reason="image.lookaside") from exc
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
    elif parts.scheme in ("http", "https"):
        import httpx

        own = client is None
        c = client or httpx.Client(timeout=30.0, follow_redirects=True, max_redirects=5)
        try:
            with c.stream("GET", url) as r:
                if r.status_code == 404:
                    return None
                if r.status_code != 200:
                    raise DependencyError(f"{url}: HTTP {r.status_code}", reason="image.lookaside")
                buf = bytearray()
                for chunk in r.iter_bytes():
                    buf += chunk
                    if len(buf) > limit:
                        break
                data = bytes(buf)
        except httpx.HTTPError as exc:
            raise DependencyError(f"{url}: {exc}", reason="image.lookaside") from exc
        finally:
            if own:
                c.close()
    else:
        raise EvidenceError(f"unsupported signature store URL {url!r}", reason="image.lookaside")
    if len(data) > limit:
        raise EvidenceError(f"{url} is larger than {limit} bytes", reason="image.too_large")
    return data


class RegistrySignatureSource:
    """``SignatureSource`` over a lookaside config and the registry client."""

    def __init__(self, registry: RegistryClient, lookaside: SigstoreConfig | None) -> None:
        self._registry, self._lookaside = registry, lookaside
        self._client: httpx.Client | None = None  # made on first use (loading CAs costs ~20 ms)

    @property
    def _http(self) -> httpx.Client:
        if self._client is None:
            import httpx

            self._client = httpx.Client(
                timeout=self._registry.settings.http_timeout_s,
                follow_redirects=True,
                max_redirects=self._registry.settings.max_redirects,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def simple_signatures(self, image: ImageReference, digest: str) -> Sequence[bytes]:
        base = self._lookaside.base_for(image) if self._lookaside else None
        if base is None:
            log.info("no signature store configured for %s", image)
            return []
        s = self._registry.settings
        out = []
        for n in range(1, s.max_signatures + 1):
            data = read_url(
                signature_url(base, image, digest, n), s.max_signature_bytes, client=self._http
            )
            if data is None:
                break
            out.append(data)
        return out

    def cosign_signatures(
        self, image: ImageReference, digest: str
    ) -> Sequence[tuple[bytes, bytes]]:
        try:
            sig = self._registry.get_manifest(image, signature_tag(digest))
        except NotFoundError:
            return []
        if not isinstance(sig, ImageManifest):
            return []
        s = self._registry.settings
        return [
            (self._registry.get_blob(image, layer.blob, s.max_signature_bytes), layer.signature)
            for layer in signature_layers(sig, max_layers=s.max_signatures)
        ]
