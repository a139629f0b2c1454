"""Admin authorization modes, upstream status-code mode, and two KBS processes on one SQLite."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from kbs_support import builtin_kbs, serve
from test_kbs_app import admin_section, b64url, client, handshake, make_kbs
from trustpod.guest.tee_key import TeeKeyPair
from trustpod.kbs.config import parse_config
from trustpod.kbs.jwks import sign_jwt
from trustpod.kbs.resource_policy import PRESETS
from trustpod.storage.memory import MemoryStore

ERR = "https://github.com/confidential-containers/kbs/errors/"
HERE = Path(__file__).resolve().parent


def app_for(text: str, tmp: Path) -> object:
    import tomllib

    config = parse_config(
        tomllib.loads("[http_server]\ninsecure_http = true\n" + text), tmp / "k.toml"
    )
    app, _ = builtin_kbs(config, store=MemoryStore())
    return app


@pytest.mark.parametrize(
    ("section", "status"),
    [
        ("", 401),  # no [admin]: denied (upstream allows all)
        ('[admin]\nauthorization_mode = "DenyAll"', 401),
        ('[admin]\nauthorization_mode = "InsecureAllowAll"', 200),
    ],
)
def test_admin_modes(tmp_path: Path, section: str, status: int) -> None:
    with serve(app_for(section, tmp_path)) as url:
        r = httpx.post(f"{url}/kbs/v0/resource/a/b/c", content=b"x")
    assert r.status_code == status, r.text
    if status == 401:
        assert r.json()["type"] == ERR + "AdminAuthAccess"


def test_admin_roles_and_claims(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pub = tmp_path / "admin.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    now = int(time.time())
    ok = {"iss": "test", "role": "admin", "exp": now + 60}
    cases = [
        (sign_jwt(key, {**ok, "role": "reader"}), 403),  # wrong role for this endpoint
        (sign_jwt(key, {**ok, "iss": "other"}), 401),
        (sign_jwt(key, {"iss": "test", "role": "admin"}), 401),  # no exp
        (sign_jwt(key, {**ok, "exp": now - 3600}), 401),
        (sign_jwt(key, {"iss": "test", "exp": now + 60}), 401),  # no role
        (sign_jwt(ec.generate_private_key(ec.SECP256R1()), ok), 401),
        (sign_jwt(key, ok), 200),
    ]
    with serve(app_for(admin_section(pub), tmp_path)) as url:
        for token, want in cases:
            r = httpx.post(
                f"{url}/kbs/v0/resource/a/b/c",
                content=b"x",
                headers={"authorization": f"Bearer {token}"},
            )
            assert r.status_code == want, (token, r.text)
        # reader may read the policy list (ACL on path)
        r = httpx.get(
            f"{url}/kbs/v0/resource-policy",
            headers={"authorization": f"Bearer {sign_jwt(key, {**ok, 'role': 'reader'})}"},
        )
        assert r.status_code == 200


def test_upstream_status_codes(tmp_path: Path, ca: trustme.CA) -> None:
    for k in make_kbs(tmp_path, ca, extra="[trustpod]\nupstream_status_codes = true\n"):
        with k.admin() as a:
            a.post("/kbs/v0/resource-policy", json={"policy": b64url(PRESETS["deny-all"])})
        with k.http() as h:
            r = h.get("/kbs/v0/resource/a/b/c", headers={"authorization": "Bearer x"})
            assert r.status_code == 401
            r = h.post("/kbs/v0/auth", content=b"{")
            assert r.status_code == 401
            assert h.get("/kbs/v0/nope").status_code == 404
            with client(k) as c:  # a real token from the built-in attestation service
                token = c.get_token()
            r = h.get("/kbs/v0/resource/a/b/c", headers={"authorization": f"Bearer {token}"})
            assert r.status_code == 401 and r.json()["type"] == ERR + "PolicyDeny"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def two_processes(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    key = ed25519.Ed25519PrivateKey.generate()
    pub = tmp_path / "admin.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    cfg = tmp_path / "kbs-config.toml"
    cfg.write_text(
        f"""[http_server]
insecure_http = true
[storage_backend]
storage_type = "Sqlite"
[storage_backend.backends.sqlite]
path = "{tmp_path / "shared.sqlite"}"
{admin_section(pub)}"""
    )
    procs, urls = [], []
    for i in range(2):
        port_file = tmp_path / f"url{i}"
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "kbs_support.py"),
                    str(cfg),
                    str(port_file),
                ],
                cwd=HERE,
            )
        )
        urls.append(port_file)
    deadline = time.monotonic() + 30
    try:
        while not all(u.exists() and u.read_text() for u in urls):
            assert time.monotonic() < deadline, "KBS processes did not start"
            time.sleep(0.05)
        token = sign_jwt(key, {"iss": "test", "role": "admin", "exp": int(time.time()) + 600})
        yield urls[0].read_text(), urls[1].read_text(), token
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def test_two_processes_share_sessions(two_processes: tuple[str, str, str]) -> None:
    url_a, url_b, admin_token = two_processes
    assert url_a != url_b
    r = httpx.post(
        f"{url_a}/kbs/v0/resource/default/key/shared",
        content=b"across",
        headers={"authorization": f"Bearer {admin_token}"},
    )
    assert r.status_code == 200
    tee = TeeKeyPair.generate_ec()
    with httpx.Client(base_url=url_a) as a:
        _, body = handshake(a, tee.public_jwk())
        cookie = a.cookies.get("kbs-session-id")
    with httpx.Client(base_url=url_b, cookies={"kbs-session-id": cookie}) as b:
        r = b.post("/kbs/v0/attest", json=body)
        assert r.status_code == 200, r.text
        r = b.get("/kbs/v0/resource/default/key/shared")  # cookie path on process B
        assert r.status_code == 200, r.text
        assert tee.decrypt(r.json()) == b"across"
