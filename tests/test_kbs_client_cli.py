"""``trustpod client`` against the fake KBS served over real sockets (HTTP and HTTPS)."""

from __future__ import annotations

import base64
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import trustme

from test_kbs_client import T0, FakeKbs
from trustpod._internal.clock import FixedClock
from trustpod.cli.main import main


def _serve(fake: FakeKbs, ssl_ctx: ssl.SSLContext | None) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = httpx.Request(
                self.command,
                f"http://kbs{self.path}",
                headers=list(self.headers.items()),
                content=self.rfile.read(length),
            )
            response = fake.handle(request)
            body = response.read()
            self.send_response(response.status_code)
            for name, value in response.headers.multi_items():
                if name.lower() not in ("content-length", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _any

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if ssl_ctx is not None:
        server.socket = ssl_ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"{scheme}://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def fake() -> FakeKbs:
    return FakeKbs(clock=FixedClock(T0), resources={"default/key/1": b"\x00bin\xff"})


@pytest.fixture
def http_url(fake: FakeKbs) -> Iterator[str]:
    server, url = _serve(fake, None)
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture
def tls(fake: FakeKbs, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server, url = _serve(fake, ctx)
    yield url, ca_file
    server.shutdown()
    server.server_close()


def test_attest_then_get_resource_with_token_over_https(
    tls: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, ca_file = tls
    key_file = tmp_path / "tee.pem"
    base = ["client", "--url", url, "--cert-file", str(ca_file), "--max-retries", "1"]
    assert main([*base, "attest", "--tee-key-file", str(key_file)]) == 0
    token = capsys.readouterr().out.strip()
    assert token.count(".") == 2 and key_file.exists()
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    args = ["get-resource", "--path", "default/key/1", "--attestation-token", str(token_file)]
    assert main([*base, *args, "--tee-key-file", str(key_file)]) == 0
    assert base64.b64decode(capsys.readouterr().out.strip()) == b"\x00bin\xff"


def test_https_without_ca_fails_as_dependency_error(
    tls: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = tls
    assert main(["client", "--url", url, "--max-retries", "1", "attest"]) == 3
    assert "kbs.unreachable" in capsys.readouterr().err


def test_get_resource_attests_itself_and_maps_errors(
    http_url: str, fake: FakeKbs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["client", "--url", http_url, "--max-retries", "1"]
    assert main([*base, "get-resource", "--path", "default/key/1"]) == 0
    assert base64.b64decode(capsys.readouterr().out.strip()) == b"\x00bin\xff"
    assert main([*base, "get-resource", "--path", "default/key/none"]) == 1
    assert "PluginInternalError" in capsys.readouterr().err
    init = tmp_path / "initdata.toml"
    init.write_text('version = "0.1.0"\nalgorithm = "sha384"\n[data]\n')
    assert main([*base, "--init-data", str(init), "attest"]) == 0
    att = fake.attestations[-1]
    assert att.init_data is not None and att.init_data.body == init.read_text()


def test_token_without_key_is_usage_error(
    http_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "t"
    token.write_text("a.b.c")
    args = ["get-resource", "--path", "a/b/c", "--attestation-token", str(token)]
    assert main(["client", "--url", http_url, *args]) == 2
    assert "--tee-key-file" in capsys.readouterr().err
    assert main(["client", "--url", http_url, "--tee", "nonexistent", "attest"]) == 2


def test_attester_settings_are_passed_and_checked(
    http_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["client", "--url", http_url, "--max-retries", "1"]
    assert main([*base, "--attester-setting", "novalue", "attest"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main([*base, "--attester-setting", "bogus=1", "attest"]) == 2
    assert "bogus" in capsys.readouterr().err
