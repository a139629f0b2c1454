"""Layer blobs over http.client (ADR 1001): redirects, Authorization across origins, a body that
ends early, keep-alive reuse, and the httpx path when the environment names a proxy."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from trustpod.errors import DependencyError, VerificationError
from trustpod.oci.blobhttp import BlobHttp
from trustpod.oci.manifest import Descriptor
from trustpod.oci.reference import ImageReference, parse_reference
from trustpod.oci.registry import RegistryClient
from trustpod.oci.settings import OciSettings

BLOB = os.urandom(3 * 1024 * 1024 + 123)
DESC = Descriptor(
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "sha256:" + hashlib.sha256(BLOB).hexdigest(),
    len(BLOB),
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    seen: ClassVar[list[tuple[str, str | None, int]]] = []
    cdn: ClassVar[str] = ""
    mode: ClassVar[str] = "plain"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization"), self.client_address[1]))
        if self.path.startswith("/v2/") and self.mode in ("redirect", "loop"):
            to = self.path if self.mode == "loop" else f"http://{self.cdn}/cdn{self.path}"
            self.send_response(307)
            self.send_header("Location", to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = BLOB[:-1000] if self.mode == "short" else BLOB
        self.send_response(200)
        self.send_header("Content-Length", str(len(BLOB)))
        self.end_headers()
        self.wfile.write(body)
        if self.mode == "short":
            self.close_connection = True


@pytest.fixture
def servers() -> Iterator[tuple[str, str]]:
    made = [ThreadingHTTPServer(("127.0.0.1", 0), _Handler) for _ in range(2)]
    for s in made:
        threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True).start()
    reg, cdn = (f"127.0.0.1:{s.server_address[1]}" for s in made)
    _Handler.seen, _Handler.cdn, _Handler.mode = [], cdn, "plain"
    try:
        yield reg, cdn
    finally:
        for s in made:
            s.shutdown()
            s.server_close()


def _client(reg: str, cdn: str, **kw: object) -> tuple[RegistryClient, ImageReference]:
    s = OciSettings(insecure_http_registries=frozenset({reg, cdn}), **kw)  # type: ignore[arg-type]
    client = RegistryClient(s)
    client._auth[f"{reg}/app"] = "Bearer secret"  # as after a token exchange
    return client, parse_reference(f"{reg}/app:1")


def test_blob_fetched_verified_and_connection_reused(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    reg, cdn = servers
    client, image = _client(reg, cdn)
    with client:
        client.fetch_blob(image, DESC, tmp_path / "a")
        client.fetch_blob(image, DESC, tmp_path / "b")
    assert (tmp_path / "a").read_bytes() == BLOB == (tmp_path / "b").read_bytes()
    assert [a for _, a, _ in _Handler.seen] == ["Bearer secret"] * 2
    assert len({port for _, _, port in _Handler.seen}) == 1  # one keep-alive connection


def test_cross_origin_redirect_drops_authorization(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    reg, cdn = servers
    _Handler.mode = "redirect"
    client, image = _client(reg, cdn)
    with client:
        client.fetch_blob(image, DESC, tmp_path / "a")
    assert (tmp_path / "a").read_bytes() == BLOB
    (first, auth1, _), (second, auth2, _) = _Handler.seen
    assert first.startswith("/v2/") and auth1 == "Bearer secret"
    assert second.startswith("/cdn/v2/") and auth2 is None  # another origin: no credentials


def test_redirect_loop_is_bounded(servers: tuple[str, str], tmp_path: Path) -> None:
    reg, cdn = servers
    _Handler.mode = "loop"
    client, image = _client(reg, cdn, max_redirects=3)
    with client, pytest.raises(DependencyError, match="too many redirects"):
        client.fetch_blob(image, DESC, tmp_path / "a")
    assert len(_Handler.seen) == 4
    assert not list(tmp_path.iterdir())  # no partial file left


def test_body_ending_early_is_a_registry_error_and_leaves_nothing(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    reg, cdn = servers
    _Handler.mode = "short"
    client, image = _client(reg, cdn)
    with client, pytest.raises(DependencyError) as info:
        client.fetch_blob(image, DESC, tmp_path / "a")
    assert info.value.reason == "image.registry"
    assert not list(tmp_path.iterdir())


def test_wrong_bytes_are_a_digest_mismatch(servers: tuple[str, str], tmp_path: Path) -> None:
    reg, cdn = servers
    client, image = _client(reg, cdn)
    other = Descriptor(DESC.media_type, "sha256:" + "0" * 64, DESC.size)
    with client, pytest.raises(VerificationError) as info:
        client.fetch_blob(image, other, tmp_path / "a")
    assert info.value.reason == "image.digest_mismatch"
    assert not list(tmp_path.iterdir())


def test_proxy_in_environment_uses_httpx(
    servers: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg, cdn = servers
    assert BlobHttp.usable()
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # bypassed for 127.0.0.1 below
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert not BlobHttp.usable()
    client, image = _client(reg, cdn)
    with client:
        client.fetch_blob(image, DESC, tmp_path / "a")
    assert (tmp_path / "a").read_bytes() == BLOB


def test_injected_httpx_transport_serves_every_get(tmp_path: Path) -> None:
    import httpx

    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get("accept-encoding")))
        return httpx.Response(200, content=BLOB)

    s = OciSettings(insecure_http_registries=frozenset({"reg.test"}))
    with RegistryClient(s, transport=httpx.MockTransport(handler)) as client:
        client.fetch_blob(parse_reference("reg.test/app:1"), DESC, tmp_path / "a")
    assert (tmp_path / "a").read_bytes() == BLOB
    assert seen == [(f"/v2/app/blobs/{DESC.digest}", "identity")]  # digests are of the bytes
