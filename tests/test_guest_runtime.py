"""The guest (AA + CDH + REST API) against real trustpod KBS instances over TLS (sample TEE).

The KBS runs with the built-in attestation service and sample reference values
(``kbs_support.builtin_kbs``); the emulated-CVM end-to-end test is ``test_guest_e2e.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from kbs_support import builtin_kbs, serve
from trustpod._internal.clock import FixedClock
from trustpod.cli.initdata import build_initdata
from trustpod.cli.main import main
from trustpod.errors import ConfigError, NotFoundError
from trustpod.guest.attesters.sample import SampleAttester
from trustpod.guest.run import GuestRuntime, load_config_dir
from trustpod.kbs.config import parse_config
from trustpod.kbs.core import KbsCore
from trustpod.sealed import VaultSecret, generate_signing_key, public_jwk, seal, seal_envelope

SIGNER = generate_signing_key()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@contextmanager
def kbs_instance(tmp: Path, ca: trustme.CA, secret: bytes) -> Iterator[tuple[str, KbsCore]]:
    import tomllib

    config = parse_config(
        tomllib.loads("[http_server]\ninsecure_http = true\n[attestation_service]\ntimeout = 5\n"),
        tmp / "kbs-config.toml",
    )
    app, core = builtin_kbs(config, clock=FixedClock(time.time()))
    core.set_resource("default/key/1", secret)
    core.set_resource("default/kek/1", b"K" * 32)
    core.set_resource("default/sealed-key/1", json.dumps(public_jwk(SIGNER.public_key())).encode())
    with serve(app, cert=ca.issue_cert("127.0.0.1")) as url:
        yield url, core


def guest_dir(tmp: Path, url: str, ca: trustme.CA, name: str) -> Path:
    d = tmp / name
    d.mkdir()
    (d / "initdata.toml").write_text(
        build_initdata(url, kbs_cert=ca.cert_pem.bytes().decode(), policy=None)
    )
    (d / "guest.toml").write_text(f'attester = "sample"\nkey_dir = "{tmp / "keys"}"\n')
    return d


def test_guest_api_against_two_kbs_chosen_by_initdata(tmp_path: Path, ca: trustme.CA) -> None:
    (tmp_path / "keys").mkdir()
    with (
        kbs_instance(tmp_path / "a", ca, b"secret-of-A") as (url_a, _),
        kbs_instance(tmp_path / "b", ca, b"secret-of-B") as (url_b, _),
    ):
        sealed = seal(
            VaultSecret(name="kbs:///default/key/1"), SIGNER, "kbs:///default/sealed-key/1"
        )
        envelope = seal(
            seal_envelope(b"envelope!", b"K" * 32, "kbs:///default/kek/1"),
            SIGNER,
            "kbs:///default/sealed-key/1",
        )
        for url, expected in ((url_a, b"secret-of-A"), (url_b, b"secret-of-B")):
            runtime = GuestRuntime.from_dir(guest_dir(tmp_path, url, ca, url.rsplit(":", 1)[1]))
            runtime.start()
            api = runtime.serve_in_thread("127.0.0.1:0")
            try:
                with httpx.Client(base_url=api, timeout=30) as h:
                    assert h.get("/cdh/resource/default/key/1").content == expected
                    assert h.post("/cdh/unseal", content=sealed).content == expected
                    assert h.post("/cdh/unseal", content=envelope).content == b"envelope!"
                    tok = h.get("/aa/token", params={"token_type": "kbs"}).json()
                    assert tok["token"].count(".") == 2 and "PRIVATE KEY" in tok["tee_keypair"]
                    ev = h.get("/aa/evidence", params={"runtime_data": "xxxx"}).json()
                    assert ev == {"svn": "1", "report_data": "eHh4eA=="}
                    missing = h.get("/cdh/resource/default/key/404")
                    assert missing.status_code == 404
                    bad = h.post("/cdh/unseal", content=sealed[:-4] + "AAAA")
                    assert bad.status_code == 401  # VerificationError: trustpod.error_table
                    assert bad.headers["x-trustpod-reason"] == "sealed.signature"
                    assert h.get("/cdh/resource/default/..%2F/1").status_code in (400, 404)
                port = api.rsplit(":", 1)[1]
                argv = ["secret", "unseal", sealed, "--api", f"http://127.0.0.1:{port}"]
                assert main(argv) == 0
            finally:
                runtime.stop()
                runtime.close()


def test_unix_socket_api_and_credentials(tmp_path: Path, ca: trustme.CA) -> None:
    (tmp_path / "keys").mkdir()
    with kbs_instance(tmp_path / "a", ca, b"cred!") as (url, _):
        d = guest_dir(tmp_path, url, ca, "g")
        doc = (d / "initdata.toml").read_text()
        cred = tmp_path / "creds" / "file"
        doc = doc.replace(
            "credentials = []\n",
            f'\n[[credentials]]\nresource_uri = "kbs:///default/key/1"\npath = "{cred}"\n',
        )
        (d / "initdata.toml").write_text(doc)
        runtime = GuestRuntime.from_dir(d)
        runtime.start()
        assert cred.read_bytes() == b"cred!"
        sock = tmp_path / "api.sock"
        runtime.serve_in_thread(f"unix:{sock}")
        try:
            transport = httpx.HTTPTransport(uds=str(sock))
            with httpx.Client(transport=transport, base_url="http://guest") as h:
                assert h.get("/cdh/resource/default/key/1").content == b"cred!"
        finally:
            runtime.stop()
            runtime.close()


def test_config_dir_rules(tmp_path: Path, ca: trustme.CA) -> None:
    d = guest_dir(tmp_path, "https://127.0.0.1:1", ca, "g")
    cfg = load_config_dir(d)
    assert cfg.initdata is not None and cfg.cdh.kbc.url == "https://127.0.0.1:1"
    (d / "cdh.toml").write_text('[kbc]\nname = "cc_kbc"\nurl = "https://evil:8080"\n')
    with pytest.raises(ConfigError) as exc:
        load_config_dir(d)
    assert exc.value.reason == "guest.config_conflict"
    runtime = GuestRuntime(cfg, SampleAttester())
    with pytest.raises(ConfigError) as exc:
        runtime.serve_in_thread("0.0.0.0:8006")
    assert exc.value.reason == "guest.api_listen"
    runtime.close()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError):
        load_config_dir(empty)


def test_unreachable_kbs_credentials_fail_start(tmp_path: Path, ca: trustme.CA) -> None:
    with kbs_instance(tmp_path / "a", ca, b"x") as (url, _):
        d = guest_dir(tmp_path, url, ca, "g")
        doc = (
            (d / "initdata.toml")
            .read_text()
            .replace(
                "credentials = []\n",
                "\n[[credentials]]\n"
                f'resource_uri = "kbs:///default/nope/1"\npath = "{tmp_path}/c"\n',
            )
        )
        (d / "initdata.toml").write_text(doc)
        runtime = GuestRuntime.from_dir(d)
        with pytest.raises(NotFoundError):
            runtime.start()
        runtime.close()


def test_guest_run_process_serves_and_stops_on_sigterm(tmp_path: Path, ca: trustme.CA) -> None:
    import signal
    import subprocess
    import sys

    (tmp_path / "keys").mkdir()
    with kbs_instance(tmp_path / "a", ca, b"from-process") as (url, _):
        d = guest_dir(tmp_path, url, ca, "g")
        sock = tmp_path / "guest.sock"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trustpod.cli",
                "guest",
                "run",
                "--config-dir",
                str(d),
                "--listen",
                f"unix:{sock}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while not sock.exists():
                assert proc.poll() is None, proc.communicate()[1].decode()
                assert time.monotonic() < deadline, "guest API did not come up"
                time.sleep(0.05)
            transport = httpx.HTTPTransport(uds=str(sock))
            with httpx.Client(transport=transport, base_url="http://guest", timeout=30) as h:
                assert h.get("/cdh/resource/default/key/1").content == b"from-process"
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
            assert proc.returncode == 0, err.decode()
            assert json.loads(out.decode().splitlines()[0])["kbs"] == url
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("alg", ["ECDH-ES+A256KW-P521", "RSA-OAEP-256"])
def test_tee_key_algorithm_from_aa_toml(tmp_path: Path, ca: trustme.CA, alg: str) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    (tmp_path / "keys").mkdir()
    with kbs_instance(tmp_path / "a", ca, b"alg!") as (url, _):
        d = guest_dir(tmp_path, url, ca, "g")
        doc = (d / "initdata.toml").read_text()
        doc = doc.replace(
            f'[token_configs.kbs]\nurl = "{url}"\n',
            f'[token_configs.kbs]\nurl = "{url}"\ntee_key_algorithm = "{alg}"\n',
        )
        (d / "initdata.toml").write_text(doc)
        runtime = GuestRuntime.from_dir(d)
        try:
            runtime.start()
            assert runtime.cdh.get_resource("kbs:///default/key/1") == b"alg!"
            pem = json.loads(runtime.aa.get_token())["tee_keypair"].encode()
            key: Any = load_pem_private_key(pem, None)
            assert key.key_size == (521 if "P521" in alg else 2048)
        finally:
            runtime.close()
