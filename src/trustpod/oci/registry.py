"""OCI distribution client (distribution-spec v1.1, token auth spec) — I/O.

HTTP goes through ``RegistryTransport`` (``http.client``; httpx when a proxy is configured in the
environment or a transport is injected; ADR 1001).

* ``GET /v2/<repo>/manifests/<ref>`` with every manifest/index media type in ``Accept``; the body
  is size-limited while streaming and its digest is computed from the bytes; a pinned digest must
  match (``image.digest_mismatch``). The ``Docker-Content-Digest`` header is never trusted.
* ``GET /v2/<repo>/blobs/<digest>`` streamed (``BlobStream``: the received chunks as a reader,
  hashed and size-checked as they pass, optionally tee'd to a cache file), size and digest checked
  at the end before the cache file is renamed into place: an unverified blob never exists under
  its name. ``fetch_blob`` only stores; the puller also unpacks from the stream (ADR 1000).
* 401 → ``WWW-Authenticate``: ``Bearer`` gets a token from the realm
  (``scope=repository:<repo>:pull``, Basic credentials from auth.json when known), ``Basic``
  sends the credentials; tokens are cached per repository. ``Authorization`` is dropped on
  cross-origin redirects (blob CDNs), as httpx does.
* ``https`` always, except registries named in ``insecure_http_registries``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from trustpod.errors import (
    AuthenticationError,
    DependencyError,
    EvidenceError,
    NotFoundError,
    VerificationError,
)
from trustpod.oci.auth import Credentials, parse_challenge
from trustpod.oci.blobhttp import READ_BYTES, HttpResponse
from trustpod.oci.blobstream import BlobStream
from trustpod.oci.manifest import (
    MANIFEST_ACCEPT,
    Descriptor,
    ImageIndex,
    ImageManifest,
    digest_of,
    parse_manifest_or_index,
    select_platform,
)
from trustpod.oci.reference import DEFAULT_REGISTRY, ImageReference, parse_reference
from trustpod.oci.settings import OciSettings
from trustpod.oci.transport import RegistryTransport

if TYPE_CHECKING:
    import httpx

__all__ = ["BlobStream", "RegistryClient", "ResolvedImage", "resolve_digest"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    image: ImageReference
    manifest: ImageManifest
    #: The index the reference pointed at, when it was one.
    index: ImageIndex | None

    @property
    def top_digest(self) -> str:
        return self.index.digest if self.index is not None else self.manifest.digest


class RegistryClient:
    """One client per puller; thread-compatible, not thread-safe."""

    def __init__(
        self,
        settings: OciSettings | None = None,
        credentials: Credentials | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings or OciSettings()
        self.credentials = credentials or Credentials({})
        for reg in sorted(self.settings.insecure_http_registries):
            log.warning("INSECURE: registry %s is spoken to over plain http", reg)
        self._http = RegistryTransport(self.settings, transport)
        self._auth: dict[str, str] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ---------------------------------------------------------------------------------

    def _base(self, image: ImageReference) -> str:
        host = "registry-1.docker.io" if image.registry == DEFAULT_REGISTRY else image.registry
        scheme = "http" if image.registry in self.settings.insecure_http_registries else "https"
        return f"{scheme}://{host}/v2/{image.repository}"

    def _token(self, image: ImageReference, challenge: str) -> str:
        ch = parse_challenge(challenge)
        creds = self.credentials.lookup(image)
        if ch.scheme == "basic":
            if creds is None:
                raise AuthenticationError(
                    f"registry {image.registry} wants Basic credentials and auth.json has none",
                    reason="image.auth",
                    fix="add the registry to auth.json (authenticated_registry_credentials_uri)",
                )
            return _basic(*creds)
        params = {"scope": f"repository:{image.repository}:pull"}
        if "service" in ch.params:
            params["service"] = ch.params["service"]
        realm = ch.params["realm"]
        if (
            creds
            and realm.startswith("http://")
            and image.registry not in self.settings.insecure_http_registries
        ):
            raise AuthenticationError(
                f"registry {image.registry} sends credentials to a plain-http token realm {realm}",
                reason="image.auth_insecure_realm",
                fix="the token service must be https (or list the registry as insecure_http)",
            )
        url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(params)}"
        with self._http.open(url, {"Authorization": _basic(*creds)} if creds else {}) as r:
            body = self._read_limited(r, self.settings.max_token_bytes, "token response")
            status = r.status_code
        if status != 200:
            raise AuthenticationError(
                f"token endpoint of {image.registry} answered {status} for {image.repository}",
                reason="image.auth",
            )
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise AuthenticationError(
                f"token endpoint of {image.registry} sent no token", reason="image.auth"
            )
        return f"Bearer {token}"

    @contextmanager
    def _get(
        self,
        image: ImageReference,
        url: str,
        accept: str | None = None,
    ) -> Iterator[HttpResponse]:
        key = image.name
        for attempt in (0, 1):
            headers = {"Accept": accept} if accept else {}
            if key in self._auth:
                headers["Authorization"] = self._auth[key]
            challenge = None
            with self._http.open(url, headers) as resp:
                if resp.status_code == 401 and attempt == 0:
                    challenge = resp.headers.get("www-authenticate", "")
                else:
                    if resp.status_code == 404:
                        raise NotFoundError(f"{url}: not found", reason="image.not_found")
                    if resp.status_code in (401, 403):
                        raise AuthenticationError(
                            f"{url}: registry refused access ({resp.status_code})",
                            reason="image.auth",
                            fix="check the registry credentials (auth.json)",
                        )
                    if resp.status_code != 200:
                        raise DependencyError(
                            f"{url}: HTTP {resp.status_code}", reason="image.registry"
                        )
                    yield resp
                    return
            if not challenge:
                raise AuthenticationError(f"{url}: 401 without a challenge", reason="image.auth")
            self._auth[key] = self._token(image, challenge)

    def _read_limited(self, resp: HttpResponse, limit: int, what: str) -> bytes:
        buf = bytearray()
        for chunk in resp.chunks():
            buf += chunk
            if len(buf) > limit:
                raise EvidenceError(
                    f"{what} is larger than {limit} bytes", reason="image.too_large"
                )
        return bytes(buf)

    # -- manifests ----------------------------------------------------------------------------

    def get_manifest(
        self, image: ImageReference, ref: str | None = None
    ) -> ImageManifest | ImageIndex:
        """The manifest or index at ``ref`` (default: the reference's digest or tag)."""
        ref = ref or image.manifest_ref
        url = f"{self._base(image)}/manifests/{ref}"
        with self._get(image, url, MANIFEST_ACCEPT) as r:
            raw = self._read_limited(r, self.settings.max_manifest_bytes, f"manifest {image}")
            ctype = r.headers.get("content-type")
        if ref.startswith("sha") and ":" in ref:
            algorithm = ref.split(":", 1)[0]
            if digest_of(raw, algorithm) != ref:
                raise VerificationError(
                    f"manifest of {image} does not match its digest {ref}",
                    reason="image.digest_mismatch",
                )
        return parse_manifest_or_index(raw, ctype, self.settings)

    def resolve(self, image: ImageReference) -> ResolvedImage:
        """Manifest (and index) for the configured platform, every digest checked."""
        top = self.get_manifest(image)
        if isinstance(top, ImageManifest):
            return ResolvedImage(image, top, None)
        desc = select_platform(top, self.settings.platform)
        inner = self.get_manifest(image, desc.digest)
        if not isinstance(inner, ImageManifest):
            raise EvidenceError(
                f"index {top.digest} points at another index", reason="image.manifest"
            )
        return ResolvedImage(image, inner, top)

    # -- blobs --------------------------------------------------------------------------------

    def get_blob(self, image: ImageReference, desc: Descriptor, limit: int) -> bytes:
        """A small blob (config, signature payload) in memory, size and digest checked."""
        if desc.size > limit:
            raise EvidenceError(
                f"blob {desc.digest} is {desc.size} bytes (limit {limit})", reason="image.too_large"
            )
        url = f"{self._base(image)}/blobs/{desc.digest}"
        with self._get(image, url) as r:
            data = self._read_limited(r, desc.size, f"blob {desc.digest}")
        algorithm = desc.digest.split(":", 1)[0]
        if len(data) != desc.size or digest_of(data, algorithm) != desc.digest:
            raise VerificationError(
                f"blob {desc.digest} of {image} does not match its descriptor",
                reason="image.digest_mismatch",
            )
        return data

    def fetch_blob(self, image: ImageReference, desc: Descriptor, dest: Path) -> None:
        """Stream a blob into ``dest`` (via a partial file), verified before the rename."""
        with self.stream_blob(image, desc, dest) as blob:
            while blob.read(READ_BYTES):
                pass

    def stream_blob(
        self, image: ImageReference, desc: Descriptor, dest: Path | None = None
    ) -> AbstractContextManager[BlobStream]:
        """The blob as a ``BlobStream``; on a clean exit the rest is read and size and digest are
        checked (``image.digest_mismatch``), then the tee'd copy (when ``dest``) gets its name."""
        if desc.size > self.settings.max_layer_bytes:
            raise EvidenceError(
                f"layer {desc.digest} is {desc.size} bytes (limit {self.settings.max_layer_bytes})",
                reason="image.too_large",
            )
        return self._stream_blob(image, desc, dest)

    @contextmanager
    def _stream_blob(
        self, image: ImageReference, desc: Descriptor, dest: Path | None
    ) -> Iterator[BlobStream]:
        tmp = None
        fd = -1
        if dest is not None:
            tmp = dest.with_name(f"{dest.name}.{os.getpid()}.{threading.get_ident()}.partial")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            url = f"{self._base(image)}/blobs/{desc.digest}"
            with self._get(image, url) as r:
                blob = BlobStream(r.chunks(), image, desc, fd)
                yield blob
                blob.finish()
            if tmp is not None and dest is not None:
                os.close(fd)
                fd = -1
                os.replace(tmp, dest)
        except BaseException:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise
        finally:
            if fd >= 0:
                os.close(fd)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def resolve_digest(
    ref: str,
    *,
    settings: OciSettings | None = None,
    credentials: Credentials | None = None,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """The digest ``ref`` names now: its own pinned digest, else the top-level manifest's digest
    (an index stays an index: pin ``repo@<that>`` and the platform is chosen at pull time)."""
    image = parse_reference(ref)
    with RegistryClient(settings, credentials, transport=transport) as client:
        top = client.get_manifest(image)
    return top.digest
