"""Registry GETs over the standard library's ``http.client`` (I/O; used by ``transport``).

Why not httpx (ADR 1001): httpcore receives 64 KiB at a time and h11 copies every chunk into
and out of its receive buffer, with Python work per chunk in four libraries; for 50 MiB of
layers that was ~0.1 s of CPU (half the fetch) and, with three downloads and the unpacker's
threads, tens of thousands of GIL hand-overs; importing httpx costs the CLI ~0.1 s more.
``http.client`` reads a content-length body with one ``recv_into`` loop per 1 MiB ``read``
(C, GIL released). Requests carry ``Accept-Encoding: identity`` (digests are of the bytes).

Same rules as the httpx client it stands in for: ``https`` with the registry client's own
``SSLContext`` (hostname checked), redirects followed up to ``max_redirects`` with
``Authorization`` dropped when the origin changes (as httpx does), a timeout per socket
operation, keep-alive connections reused per origin (thread-safe). When a proxy is configured
in the environment (which httpx would honour) this path is not used: ``usable()`` is False.
"""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ssl import SSLContext
from urllib.parse import urljoin, urlsplit

from trustpod.errors import DependencyError

__all__ = ["READ_BYTES", "BlobHttp", "HttpResponse"]

#: One ``read`` of a body: what the stream hands on (hashed, tee'd, inflated) at once.
READ_BYTES = 1 << 20

_REDIRECTS = (301, 302, 303, 307, 308)
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy")

_Origin = tuple[str, str, int]


def _origin(url: str) -> tuple[_Origin, str]:
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise DependencyError(f"cannot fetch {url!r}", reason="image.registry")
    port = u.port or (443 if u.scheme == "https" else 80)
    target = u.path or "/"
    return (u.scheme, u.hostname, port), f"{target}?{u.query}" if u.query else target


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A response whatever the client: status, headers (lower-case names, first value), body."""

    status_code: int
    headers: dict[str, str]
    url: str
    #: The body as chunks; transport errors and a body ending early raise ``image.registry``.
    chunks: Callable[[], Iterator[bytes]]


def _body(resp: http.client.HTTPResponse, url: str) -> Iterator[bytes]:
    try:
        while chunk := resp.read(READ_BYTES):
            yield chunk
    except (OSError, http.client.HTTPException) as exc:
        raise DependencyError(f"reading {url}: {exc!r}", reason="image.registry") from exc
    if resp.length:  # content-length not reached: the peer closed the connection
        raise DependencyError(f"{url}: connection closed early", reason="image.registry")


def _headers(resp: http.client.HTTPResponse) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in resp.getheaders():
        out.setdefault(k.lower(), v)
    return out


class BlobHttp:
    """GET with redirects over pooled ``http.client`` connections (one per thread at a time)."""

    def __init__(
        self, ssl_context: Callable[[], SSLContext], timeout: float, max_redirects: int
    ) -> None:
        self._ssl, self._timeout, self._max_redirects = ssl_context, timeout, max_redirects
        self._idle: dict[_Origin, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def usable() -> bool:
        """False when the environment names a proxy (httpx honours those; this path does not)."""
        return not any(os.environ.get(v) or os.environ.get(v.upper()) for v in _PROXY_VARS)

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()

    def _connection(self, origin: _Origin) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(origin)
            if idle:
                return idle.pop(), True
        scheme, host, port = origin
        if scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=self._timeout, context=self._ssl()
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._timeout)
        return conn, False

    def _send(
        self, url: str, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, _Origin, http.client.HTTPResponse]:
        origin, target = _origin(url)
        for _ in range(2):  # a reused keep-alive connection may have been closed by the peer
            conn, reused = self._connection(origin)
            try:
                conn.request("GET", target, headers=headers)
                return conn, origin, conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if not reused:
                    raise DependencyError(f"{url}: {exc!r}", reason="image.registry") from exc
        raise DependencyError(f"{url}: connection lost", reason="image.registry")

    @contextmanager
    def get(self, url: str, headers: dict[str, str]) -> Iterator[HttpResponse]:
        """The final response (after redirects); its connection is pooled again only when the
        body was read to its end."""
        hops = 0
        while True:
            conn, origin, resp = self._send(url, headers)
            location = resp.headers.get("location")
            if resp.status not in _REDIRECTS or not location:
                break
            resp.read(64 * 1024)  # a redirect's small body, so the connection can be reused
            self._release(conn, origin, resp)
            hops += 1
            if hops > self._max_redirects:
                raise DependencyError(f"{url}: too many redirects", reason="image.registry")
            url = urljoin(url, location)
            new, _ = _origin(url)  # httpx's rule: keep it on the same origin or an https upgrade
            same_host_upgrade = new[1] == origin[1] and (origin[0], new[0]) == ("http", "https")
            if new != origin and not same_host_upgrade:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        try:
            yield HttpResponse(resp.status, _headers(resp), url, lambda: _body(resp, url))
        finally:
            self._release(conn, origin, resp)

    def _release(
        self, conn: http.client.HTTPConnection, origin: _Origin, resp: http.client.HTTPResponse
    ) -> None:
        if resp.isclosed() and not resp.will_close:
            with self._lock:
                self._idle.setdefault(origin, []).append(conn)
        else:
            conn.close()
