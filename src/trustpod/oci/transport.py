"""The registry client's HTTP: ``http.client`` (``blobhttp``), httpx when it must be (I/O).

``RegistryTransport.open(url, headers)`` is one GET (redirects followed) as an ``HttpResponse``.
It goes over ``BlobHttp`` unless a proxy is named in the environment (httpx honours
``HTTP(S)_PROXY``/``ALL_PROXY``/``NO_PROXY``; ``http.client`` does not) or an httpx transport
was injected (tests, ``resolve_digest`` callers); then over an ``httpx.Client`` with the same
TLS context, timeout and redirect limit. httpx is imported only then (~0.1 s of CLI start-up).
The ``SSLContext`` (CA loading ~20 ms) is made on the first ``https`` request: httpx's default
(``SSL_CERT_FILE``/``SSL_CERT_DIR``, else certifi), or the system store plus
``extra_root_certificates`` when those are set, as before (ADR 1001).
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from trustpod.errors import DependencyError
from trustpod.oci.blobhttp import BlobHttp, HttpResponse
from trustpod.oci.settings import OciSettings

if TYPE_CHECKING:
    import httpx

__all__ = ["RegistryTransport", "default_ssl_context"]


def default_ssl_context(extra_root_certificates: tuple[str, ...] = ()) -> ssl.SSLContext:
    """What httpx's ``verify=True`` builds, or the system store plus the extra PEM roots."""
    if extra_root_certificates:
        ctx = ssl.create_default_context()
        for pem in extra_root_certificates:
            ctx.load_verify_locations(cadata=pem)
        return ctx
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


class RegistryTransport:
    """GETs for one registry client; thread-safe (layers download concurrently)."""

    def __init__(self, settings: OciSettings, transport: httpx.BaseTransport | None = None) -> None:
        self._settings, self._transport = settings, transport
        self._lock = threading.Lock()
        self._ctx: ssl.SSLContext | None = None
        self._client: httpx.Client | None = None
        self._lean = BlobHttp(self._ssl, settings.http_timeout_s, settings.max_redirects)

    def _ssl(self) -> ssl.SSLContext:
        with self._lock:
            if self._ctx is None:
                self._ctx = default_ssl_context(self._settings.extra_root_certificates)
            return self._ctx

    def _httpx(self) -> httpx.Client:
        ctx = self._ssl()
        with self._lock:
            if self._client is None:
                import httpx

                self._client = httpx.Client(
                    verify=ctx,
                    timeout=self._settings.http_timeout_s,
                    follow_redirects=True,
                    max_redirects=self._settings.max_redirects,
                    transport=self._transport,
                )
            return self._client

    def close(self) -> None:
        self._lean.close()
        if self._client is not None:
            self._client.close()

    def open(self, url: str, headers: dict[str, str]) -> AbstractContextManager[HttpResponse]:
        if self._transport is None and BlobHttp.usable():
            return self._lean.get(url, headers)
        return self._open_httpx(url, headers)

    @contextmanager
    def _open_httpx(self, url: str, headers: dict[str, str]) -> Iterator[HttpResponse]:
        import httpx

        client = self._httpx()
        headers = {"Accept-Encoding": "identity", **headers}  # digests are of the bytes as sent
        try:
            resp = client.send(client.build_request("GET", url, headers=headers), stream=True)
        except httpx.HTTPError as exc:
            raise DependencyError(f"{url}: {exc}", reason="image.registry") from exc
        try:
            heads = {k.lower(): v for k, v in reversed(resp.headers.multi_items())}

            def chunks() -> Iterator[bytes]:
                # iter_raw() without a chunk size: httpx's re-chunking copy costs more than it saves
                try:
                    if resp.is_stream_consumed:  # read already (an in-memory test transport)
                        yield resp.content
                        return
                    yield from resp.iter_raw()
                except httpx.HTTPError as exc:
                    raise DependencyError(f"reading {url}: {exc}", reason="image.registry") from exc

            yield HttpResponse(resp.status_code, heads, str(resp.url), chunks)
        finally:
            resp.close()
