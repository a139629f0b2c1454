"""KBS replicas for the tests: separate ``trustpod kbs init`` runs on one shared store, each served
by its own ``trustpod kbs serve`` process on 127.0.0.1, and a whole RCAR flow spread over them
(auth on one, attest on the next, resource on a third), as a client behind a load balancer sees it.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from trustpod.guest.tee_key import TeeKeyPair
from trustpod.protocol import runtime_data_digest

__all__ = [
    "SAMPLE_RVS",
    "Replica",
    "flow",
    "init_replicas",
    "provision_reference_values",
    "sample_attest_body",
]

CLI = [sys.executable, "-m", "trustpod.cli"]
SAN = "trustpod-kbs.test.svc"
SAMPLE_RVS = {
    "launch_digest": ["abcde"],
    "svn": ["1"],
    "major_version": 1,
    "minimum_minor_version": 4,
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    """One ``kbs init`` directory and its ``kbs serve`` process."""

    def __init__(self, d: Path, listen: str, tls: bool) -> None:
        self.dir = d
        self.config = d / "kbs-config.toml"
        self.url = f"{'https' if tls else 'http'}://{listen}"
        self.cert = d / "kbs-cert.pem" if tls else None
        self.admin_token = (d / "admin-token").read_text().strip()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = d / "serve.log"

    def start(self, env: dict[str, str] | None = None) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*CLI, "kbs", "serve", "--config", str(self.config), "--workers", "1"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )

    def wait_ready(self, verify: Any, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"kbs serve exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", verify=verify, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"{self.url} did not come up: {self.log.read_text()[-2000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def init_replicas(root: Path, n: int, storage_url: str, *, tls: bool = True) -> list[Replica]:
    """``n`` separate ``trustpod kbs init`` runs against ``storage_url``; the 2nd.. reuse the first
    one's admin and at-rest keys (``--join``) so one admin token is valid on all."""
    out: list[Replica] = []
    for i in range(n):
        d = root / f"replica{i}"
        listen = f"127.0.0.1:{_port()}"
        args = ["kbs", "init", "--dir", str(d), "--listen", listen, "--san", SAN]
        args += ["--storage-url", storage_url]
        if not tls:
            args.append("--insecure-http")
        if out:
            args += ["--join", str(out[0].dir)]
        subprocess.run([*CLI, *args], check=True, capture_output=True, timeout=60)
        out.append(Replica(d, listen, tls))
    return out


def ca_bundle(replicas: list[Replica], path: Path) -> ssl.SSLContext | bool:
    certs = [r.cert for r in replicas if r.cert is not None]
    if not certs:
        return False
    path.write_bytes(b"".join(c.read_bytes() for c in certs))
    return ssl.create_default_context(cafile=str(path))


def provision_reference_values(client: httpx.Client, token: str) -> None:
    for name, value in SAMPLE_RVS.items():
        payload = base64.b64encode(json.dumps({name: value}).encode()).decode()
        msg = {"version": "0.1.0", "type": "sample", "payload": payload}
        r = client.post(
            "/kbs/v0/reference-value", json=msg, headers={"authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200, r.text


def sample_attest_body(nonce: str, tee: TeeKeyPair) -> dict[str, Any]:
    digest = runtime_data_digest(nonce, tee.public_jwk(), "")
    return {
        "runtime-data": {"nonce": nonce, "tee-pubkey": tee.public_jwk()},
        "tee-evidence": {
            "primary_evidence": {"svn": "1", "report_data": base64.b64encode(digest).decode()},
            "additional_evidence": "",
        },
    }


def flow(clients: list[httpx.Client], resource: str, start: int = 0) -> bytes:
    """auth on ``clients[start]``, attest on the next, resource on the one after; the plaintext.
    Raises ``httpx.HTTPError`` or ``AssertionError`` (with the status) on any failure. The
    resource GET carries the token only (a session cookie would take precedence, as upstream)."""
    n = len(clients)
    a, b, c = (clients[(start + k) % n] for k in range(3))
    tee = TeeKeyPair.generate_ec()
    r = a.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""})
    assert r.status_code == 200, f"auth {r.status_code} {r.text[:300]}"
    cookie = r.headers["set-cookie"].split(";")[0]
    nonce = r.json()["nonce"]
    for client in clients:  # the cookie goes explicitly to the attest replica, no jar
        client.cookies.clear()
    r = b.post("/kbs/v0/attest", json=sample_attest_body(nonce, tee), headers={"cookie": cookie})
    assert r.status_code == 200, f"attest {r.status_code} {r.text[:300]}"
    token = r.json()["token"]
    r = c.get(f"/kbs/v0/resource/{resource}", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200, f"resource {r.status_code} {r.text[:300]}"
    return tee.decrypt(r.json())
