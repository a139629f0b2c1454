"""Issue 12, security defects 4 and 8, through ``trustpod kbs serve`` as a user runs it (real
processes, TLS from ``kbs init``): logging in every worker, TLS settings applied or refused."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from trustpod.errors import ConfigError
from trustpod.kbs.config import load_config
from trustpod.kbs.init_dir import init_kbs_dir
from trustpod.kbs.tls import server_context

CLI = [sys.executable, "-m", "trustpod.cli"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    host: str
    port: int
    cert: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


def _kbs_dir(tmp: Path, http_extra: str = "", trustpod_extra: str = "") -> tuple[Path, int]:
    port = _port()
    res = init_kbs_dir(tmp, f"127.0.0.1:{port}")
    text = res.config.read_text()
    text = text.replace("[http_server]\n", f"[http_server]\n{http_extra}\n", 1)
    text = text.replace("[trustpod]\n", f"[trustpod]\n{trustpod_extra}\n", 1)
    res.config.write_text(text)
    return res.config, port


@contextlib.contextmanager
def _start(config: Path, port: int, *args: str) -> Iterator[Served]:
    log = config.parent / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CLI, "-v", "kbs", "serve", "--config", str(config), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    cert = config.parent / "kbs-cert.pem"
    served = Served(f"https://127.0.0.1:{port}", "127.0.0.1", port, cert, log, proc)
    ctx = ssl.create_default_context(cafile=str(cert))
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"kbs serve exited:\n{log.read_text()}")
            try:
                if httpx.get(f"{served.url}/healthz", verify=ctx, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"kbs serve did not come up:\n{log.read_text()}")
            time.sleep(0.2)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _client_ctx(cert: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert))
    return ctx


def _handshake(served: Served, ctx: ssl.SSLContext) -> str | None:
    """The negotiated cipher, or None when the server refused the handshake."""
    try:
        with socket.create_connection((served.host, served.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                cipher = tls.cipher()
                return None if cipher is None else cipher[0]
    except (ssl.SSLError, ConnectionResetError):
        return None


@pytest.fixture(scope="module")
def two_workers_json(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config, port = _kbs_dir(tmp_path_factory.mktemp("kbs2"))
    with _start(config, port, "--workers", "2", "--log-format", "json") as served:
        yield served


# -- 4: logging in every worker -------------------------------------------------------------------
def test_denials_logged_by_two_workers_as_json(two_workers_json: Served) -> None:
    served = two_workers_json
    ids = []
    for _ in range(12):  # new connections: both workers accept from the shared socket
        with httpx.Client(verify=_client_ctx(served.cert), timeout=10) as c:
            r = c.get(f"{served.url}/kbs/v0/resource/default/key/1")
        assert r.status_code == 401
        ids.append(r.headers["x-request-id"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = served.log.read_text(errors="replace")
        if all(i in text for i in ids):
            break
        time.sleep(0.2)
    docs = []
    for line in served.log_lines():
        doc = json.loads(line)  # every line, from the supervisor and the workers, is JSON
        assert {"time", "level", "logger", "pid", "message"} <= set(doc), doc
        docs.append(doc)
    denied = {d["request_id"]: d for d in docs if d["message"].startswith("denied request")}
    assert set(ids) <= set(denied), served.log.read_text()
    assert all(denied[i]["level"] == "INFO" for i in ids)
    assert len({denied[i]["pid"] for i in ids}) >= 1
    assert served.proc.pid not in {denied[i]["pid"] for i in ids}  # served by the workers


def test_text_logs_have_time_and_level_in_every_worker(tmp_path: Path) -> None:
    config, port = _kbs_dir(tmp_path)
    with _start(config, port, "--workers", "2") as served:
        with httpx.Client(verify=_client_ctx(served.cert), timeout=10) as c:
            r = c.get(f"{served.url}/kbs/v0/resource/default/key/1")
        rid = r.headers["x-request-id"]
        deadline = time.monotonic() + 10
        while rid not in served.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        lines = served.log_lines()
    assert any(rid in line and "denied request" in line for line in lines), lines
    for line in lines:
        if line.startswith(("Traceback", " ")):
            continue
        date, clock, level = line.split(" ")[:3]
        assert len(date) == 10 and date[4] == "-" and ":" in clock, line
        assert level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), line


# -- 8: TLS settings ------------------------------------------------------------------------------
def test_default_profile_has_no_cbc_and_no_old_versions(two_workers_json: Served) -> None:
    served = two_workers_json
    cbc = _client_ctx(served.cert)
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA")
    assert _handshake(served, cbc) is None
    gcm = _client_ctx(served.cert)
    gcm.maximum_version = ssl.TLSVersion.TLSv1_2
    assert (_handshake(served, gcm) or "").endswith(("GCM-SHA256", "GCM-SHA384", "POLY1305"))
    tls13 = _client_ctx(served.cert)
    tls13.minimum_version = ssl.TLSVersion.TLSv1_3
    assert _handshake(served, tls13) is not None


def test_modern_profile_and_one_group_applied(tmp_path: Path) -> None:
    config, port = _kbs_dir(tmp_path, http_extra='tls_profile = "modern"\ntls_groups = "secp384r1"')
    with _start(config, port, "--workers", "1") as served:
        tls12 = _client_ctx(served.cert)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        assert _handshake(served, tls12) is None
        tls13 = _client_ctx(served.cert)
        assert _handshake(served, tls13) is not None
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("openssl CLI not installed (apt package openssl)")
        for group, ok in (("P-256", False), ("P-384", True)):
            cmd = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-brief"]
            r = subprocess.run(
                [*cmd, "-groups", group, "-CAfile", str(served.cert)],
                input=b"",
                capture_output=True,
                timeout=30,
            )
            out = (r.stdout + r.stderr).decode(errors="replace")
            assert (r.returncode == 0 and "Protocol version: TLSv1.3" in out) is ok, (group, out)


@pytest.mark.parametrize(
    ("http_extra", "message"),
    [
        ('tls_groups = "X25519:prime256v1"', "one group only"),
        ('tls_groups = "X25519MLKEM768"', "not supported"),
        ('tls_profile = "old"', "not served"),
        ('tls_min_version = "1.0"', "cannot be applied"),
        ('tls_min_version = "1.3"\ntls_max_version = "1.2"', "above"),
        ('tls_profile = "bogus"', "unknown"),
    ],
)
def test_what_cannot_be_applied_refuses_to_start(
    tmp_path: Path, http_extra: str, message: str
) -> None:
    config, _ = _kbs_dir(tmp_path, http_extra=http_extra)

    with pytest.raises(ConfigError, match=message):
        server_context(load_config(config).http_server)
    if "X25519:" in http_extra:  # and through the CLI, before listening
        r = subprocess.run(
            [*CLI, "kbs", "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode != 0 and "one group only" in r.stderr and "Traceback" not in r.stderr


def test_security_settings_parsed_and_checked(tmp_path: Path) -> None:
    extra = (
        'log_format = "json"\nmax_extra_params_bytes = 512\nmax_sessions = 7\n'
        "max_json_depth = 9\nrequest_body_timeout_s = 3\nmax_resource_path_label_chars = 40"
    )
    config, _ = _kbs_dir(tmp_path / "a", trustpod_extra=extra)
    ts = load_config(config).trustpod
    assert (ts.log_format, ts.max_extra_params_bytes, ts.max_sessions) == ("json", 512, 7)
    assert (ts.max_json_depth, ts.request_body_timeout_s, ts.max_resource_path_label_chars) == (
        9,
        3,
        40,
    )
    assert ts.at_rest_key_file == tmp_path / "a" / "at-rest.key"
    bad, _ = _kbs_dir(tmp_path / "b", trustpod_extra='log_format = "xml"')
    with pytest.raises(ConfigError, match="log_format"):
        load_config(bad)
    zero, _ = _kbs_dir(tmp_path / "c", trustpod_extra="max_sessions = 0")
    with pytest.raises(ConfigError):
        load_config(zero)
