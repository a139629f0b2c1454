"""The whole flow through the CLI, as the README shows it, over real TLS sockets:
``trustpod kbs init`` -> ``trustpod kbs serve`` -> ``trustpod admin ...`` -> ``trustpod client``.
Also: two ``trustpod kbs serve`` processes on one KBS directory (auth on one, attest + resource
on the other), and the admin CLI's messages/exit codes."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("trustpod.attestation.service")

from trustpod.guest.tee_key import TeeKeyPair
from trustpod.protocol import runtime_data_digest

CLI = [sys.executable, "-m", "trustpod.cli"]
SAMPLE_RVS = [
    ["launch_digest", "abcde"],
    ["svn", "1"],
    ["major_version", "1", "--as-integer", "--as-single-value"],
    ["minimum_minor_version", "4", "--as-integer", "--as-single-value"],
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tp(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"trustpod {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def _wait(url: str, cafile: str) -> None:
    ctx = ssl.create_default_context(cafile=cafile)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", verify=ctx, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("trustpod kbs serve did not come up")


class Running:
    def __init__(self, d: Path, url: str) -> None:
        self.dir = d
        self.url = url
        self.cert = str(d / "kbs-cert.pem")
        self.token = str(d / "admin-token")

    def admin(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return tp(
            "admin",
            "--url",
            self.url,
            "--token-file",
            self.token,
            "--cert-file",
            self.cert,
            *args,
            check=check,
        )


def _serve(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*CLI, "kbs", "serve", "--config", str(config), *extra], env=os.environ)


@pytest.fixture(scope="module")
def kbs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    d = tmp_path_factory.mktemp("kbs")
    listen = f"127.0.0.1:{_port()}"
    out = tp("kbs", "init", "--dir", str(d), "--listen", listen).stdout
    assert "admin-token" in out
    proc = _serve(d / "kbs-config.toml")
    try:
        running = Running(d, f"https://{listen}")
        _wait(running.url, running.cert)
        yield running
    finally:
        proc.terminate()
        proc.wait(20)


def test_readme_flow(kbs: Running, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"readme secret")
    assert (
        "set"
        in kbs.admin(
            "set-resource", "--path", "default/key/1", "--resource-file", str(secret)
        ).stdout
    )
    kbs.admin("set-resource-policy", "--affirming")
    for rv in SAMPLE_RVS:
        kbs.admin("set-reference-value", *rv)
    assert json.loads(kbs.admin("get-reference-value", "svn").stdout) == ["1"]
    out = tp(
        "client",
        "--url",
        kbs.url,
        "--cert-file",
        kbs.cert,
        "get-resource",
        "--path",
        "default/key/1",
    ).stdout.strip()
    assert base64.b64decode(out) == b"readme secret"
    token = tp("client", "--url", kbs.url, "--cert-file", kbs.cert, "attest").stdout.strip()
    assert token.count(".") == 2


def test_admin_cli_errors(kbs: Running, tmp_path: Path) -> None:
    r = kbs.admin("delete-resource", "--path", "default/nope/x", check=False)
    assert r.returncode == 1 and "404" in r.stderr
    bad = tmp_path / "bad-token"
    bad.write_text("not-a-jwt")
    r = tp(
        "admin",
        "--url",
        kbs.url,
        "--token-file",
        str(bad),
        "--cert-file",
        kbs.cert,
        "set-resource-policy",
        "--deny-all",
        check=False,
    )
    assert r.returncode == 1 and "401" in r.stderr and "fix:" in r.stderr
    r = tp(
        "admin",
        "--url",
        kbs.url,
        "--token-file",
        kbs.token,
        "set-resource-policy",
        "--deny-all",
        check=False,
    )  # no --cert-file: TLS verification fails
    assert r.returncode == 3 and "--cert-file" in r.stderr
    r = kbs.admin("explain", "0" * 32, check=False)
    assert r.returncode == 1


def test_two_serve_processes_share_one_directory(kbs: Running, tmp_path: Path) -> None:
    # a second KBS process on the same SQLite file and signer key, on another port
    cfg = (kbs.dir / "kbs-config.toml").read_text()
    listen_b = f"127.0.0.1:{_port()}"
    old = kbs.url.removeprefix("https://")
    cfg_b = tmp_path / "kbs-b.toml"
    cfg_b.write_text(cfg.replace(old, listen_b))
    proc = _serve(cfg_b, "--workers", "2")  # process B itself runs two uvicorn workers
    try:
        url_b = f"https://{listen_b}"
        _wait(url_b, kbs.cert)
        secret = tmp_path / "s"
        secret.write_bytes(b"shared")
        kbs.admin("set-resource", "--path", "default/key/shared", "--resource-file", str(secret))
        kbs.admin("set-resource-policy", "--affirming")
        for rv in SAMPLE_RVS:
            kbs.admin("set-reference-value", *rv)
        ctx = ssl.create_default_context(cafile=kbs.cert)
        tee = TeeKeyPair.generate_ec()
        with httpx.Client(base_url=kbs.url, verify=ctx) as a:
            r = a.post(
                "/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""}
            )
            nonce = r.json()["nonce"]
            cookie = r.headers["set-cookie"].split(";")[0]
        digest = runtime_data_digest(nonce, tee.public_jwk(), "")
        body = {
            "runtime-data": {"nonce": nonce, "tee-pubkey": tee.public_jwk()},
            "tee-evidence": {
                "primary_evidence": {"svn": "1", "report_data": base64.b64encode(digest).decode()},
                "additional_evidence": "",
            },
        }
        with httpx.Client(base_url=url_b, verify=ctx, headers={"cookie": cookie}) as b:
            r = b.post("/kbs/v0/attest", json=body)
            assert r.status_code == 200, r.text
            r = b.get("/kbs/v0/resource/default/key/shared")
            assert r.status_code == 200, r.text
            assert tee.decrypt(r.json()) == b"shared"
        # /metrics on a multi-worker process aggregates every worker
        auth = {"version": "0.4.0", "tee": "sample", "extra-params": ""}
        for _ in range(6):  # new connections: the kernel spreads them over the workers
            assert httpx.post(f"{url_b}/kbs/v0/auth", json=auth, verify=ctx).status_code == 200
        text = httpx.get(f"{url_b}/metrics", verify=ctx).text
        assert "kbs_auth_requests_total 6.0" in text, text
        assert 'kbs_attestation_successes_total{tee_type="sample"} 1.0' in text
    finally:
        proc.terminate()
        proc.wait(20)


def test_denial_explained_through_the_cli(kbs: Running, tmp_path: Path) -> None:
    import re

    secret = tmp_path / "secret"
    secret.write_bytes(b"x")
    kbs.admin("set-resource", "--path", "default/key/denied", "--resource-file", str(secret))
    kbs.admin("set-resource-policy", "--deny-all")
    try:
        r = tp(
            "client",
            "--url",
            kbs.url,
            "--cert-file",
            kbs.cert,
            "get-resource",
            "--path",
            "default/key/denied",
            check=False,
        )
        assert r.returncode == 1, r.stderr
        m = re.search(r"request id ([0-9a-f]{32})", r.stderr)
        assert m, r.stderr
        doc = json.loads(kbs.admin("explain", m.group(1)).stdout)
        assert doc["status"] == 403 and doc["variant"] == "PolicyDeny"
        assert doc["explain"]["policy"] == "deny-all"
        assert doc["explain"]["submods"]["cpu0"]["ear.status"] == "affirming"
    finally:
        kbs.admin("set-resource-policy", "--affirming")


def test_attestation_policy_through_the_cli(kbs: Running, tmp_path: Path) -> None:
    from trustpod.attestation.defaults import default_policy

    strict = tmp_path / "strict.rego"
    strict.write_text(
        "package policy\nimport rego.v1\n"
        'trust_claims := {"executables": 3, "hardware": 97, "configuration": 2}\n'
    )
    default = tmp_path / "default_cpu.rego"
    default.write_text(default_policy("default_cpu"))
    secret = tmp_path / "s"
    secret.write_bytes(b"policy")
    kbs.admin("set-resource", "--path", "default/key/policy", "--resource-file", str(secret))
    for rv in SAMPLE_RVS:
        kbs.admin("set-reference-value", *rv)
    args = ["client", "--url", kbs.url, "--cert-file", kbs.cert]
    get = [*args, "get-resource", "--path", "default/key/policy"]
    try:
        kbs.admin("set-attestation-policy", "--id", "default_cpu", "--policy-file", str(strict))
        r = tp(*get, check=False)
        assert r.returncode == 1 and "403 PolicyDeny" in r.stderr, r.stderr
        bad = tmp_path / "bad.rego"
        bad.write_text("package policy\ntrust_claims := {{\n")
        r = kbs.admin(
            "set-attestation-policy", "--id", "default_cpu", "--policy-file", str(bad), check=False
        )
        assert r.returncode == 4 and "400" in r.stderr, r.stderr
    finally:
        kbs.admin("set-attestation-policy", "--id", "default_cpu", "--policy-file", str(default))
    assert base64.b64decode(tp(*get).stdout.strip()) == b"policy"


def test_policy_compile_errors_come_back_whole(kbs: Running, tmp_path: Path) -> None:
    # regorus' message (file, line, column, the source line and caret) reaches the admin
    bad = tmp_path / "bad.rego"
    bad.write_text("package policy\nimport rego.v1\n\nallow if {\n  input.x ==\n}\n")
    r = kbs.admin("set-resource-policy", "--policy-file", str(bad), check=False)
    assert r.returncode != 0 and "400" in r.stderr, r.stderr
    assert "policy.rego line 6, column 1: expecting expression" in r.stderr
    assert "6 | }" in r.stderr and "rego-errorseq" not in r.stderr
    v0 = tmp_path / "v0.rego"
    v0.write_text("package policy\ndefault allow = false\nallow { input.a == 1 }\n")
    r = kbs.admin("set-resource-policy", "--policy-file", str(v0), check=False)
    assert "line 3, column 7: `if` keyword is required before rule body" in r.stderr, r.stderr
    r = kbs.admin("set-attestation-policy", "--id", "mine", "--policy-file", str(bad), check=False)
    assert r.returncode != 0 and "line 6, column 1: expecting expression" in r.stderr, r.stderr
    kbs.admin("set-resource-policy", "--affirming")  # the stored policy was never replaced
