"""KBS over real sockets (uvicorn + trustme TLS): RCAR, resources, admin, errors, metrics."""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from kbs_support import ExternalIssuer, builtin_kbs, serve
from trustpod._internal.clock import FixedClock
from trustpod.errors import PolicyDenied
from trustpod.guest.attesters.sample import SampleAttester
from trustpod.guest.kbs_client import KbsClient
from trustpod.kbs.config import parse_config
from trustpod.kbs.core import KbsCore
from trustpod.kbs.jwks import sign_jwt
from trustpod.kbs.resource_policy import PRESETS
from trustpod.protocol import runtime_data_digest
from trustpod.storage.sqlite import SqliteStore

ERR = "https://github.com/confidential-containers/kbs/errors/"


class Kbs:
    def __init__(self, url: str, ca: str, admin_token: str, core: KbsCore, clock: Any):
        self.url = url
        self.ca = ca
        self.admin_token = admin_token
        self.core = core
        self.clock = clock

    def http(self) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=self.ca)
        return httpx.Client(base_url=self.url, verify=ctx, timeout=10)

    def admin(self, token: str | None = None) -> httpx.Client:
        c = self.http()
        c.headers["authorization"] = f"Bearer {token or self.admin_token}"
        return c


def admin_section(pub: Path) -> str:
    return f"""
[admin]
authorization_mode = "AuthenticatedAuthorization"
[admin.authentication.bearer_jwt]
identity_providers = [{{issuer = "test", public_key_uri = "{pub}"}}]
[admin.authorization.regex_acl]
acls = [{{role = "admin", allowed_endpoints = "^/kbs/.+$"}},
        {{role = "reader", allowed_endpoints = "^/kbs/v0/resource-policy$"}}]
"""


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def make_kbs(
    tmp: Path,
    ca: trustme.CA,
    *,
    extra: str = "",
    admin: bool = True,
    clock: Any = None,
    references: bool = True,
) -> Iterator[Kbs]:
    key = ed25519.Ed25519PrivateKey.generate()
    pub = tmp / "admin.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    text = f"""
[http_server]
insecure_http = true
payload_request_size = 1
[attestation_service]
timeout = 5
[storage_backend]
storage_type = "Sqlite"
[storage_backend.backends.sqlite]
path = "{tmp / "kbs.sqlite"}"
{admin_section(pub) if admin else ""}
{extra}
"""
    import tomllib

    config = parse_config(tomllib.loads(text), tmp / "kbs-config.toml")
    clock = clock or FixedClock(time.time())
    store = SqliteStore(tmp / "kbs.sqlite")
    app, core = builtin_kbs(config, store=store, clock=clock, references=references)
    now = int(clock.time())
    token = sign_jwt(key, {"iss": "test", "role": "admin", "exp": now + 3600})
    cafile = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    with serve(app, cert=ca.issue_cert("127.0.0.1")) as url:
        yield Kbs(url, str(cafile), token, core, clock)
    store.close()


@pytest.fixture
def kbs(tmp_path: Path, ca: trustme.CA) -> Iterator[Kbs]:
    yield from make_kbs(tmp_path, ca)


def b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def client(kbs: Kbs) -> KbsClient:
    return KbsClient(kbs.url, SampleAttester(), cert_file=kbs.ca, max_retries=1, retry_delay_s=0)


def handshake(http: httpx.Client, tee_jwk: dict[str, str]) -> tuple[str, dict[str, Any]]:
    r = http.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""})
    assert r.status_code == 200, r.text
    nonce = r.json()["nonce"]
    sid = r.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    h_attrs: Any = http
    h_attrs.last_sid = sid
    assert r.json()["extra-params"] == ""
    assert len(base64.b64decode(nonce)) == 32
    digest = runtime_data_digest(nonce, tee_jwk, "")
    body = {
        "runtime-data": {"nonce": nonce, "tee-pubkey": tee_jwk},
        "tee-evidence": {
            "primary_evidence": {"svn": "1", "report_data": base64.b64encode(digest).decode()},
            "additional_evidence": "",
        },
    }
    return nonce, body


def test_full_flow_and_admin(kbs: Kbs) -> None:
    with kbs.admin() as a:
        assert a.post("/kbs/v0/resource/default/key/one", content=b"s3cret").status_code == 200
        ids = a.get("/kbs/v0/resource-policy")
        assert ids.status_code == 200 and ids.json() == ["resource-policy"]
    with client(kbs) as c:
        assert c.get_resource("default/key/one") == b"s3cret"
        token = c.get_token()
    # Bearer path with a fresh HTTP client, no cookie
    with kbs.http() as h:
        r = h.get("/kbs/v0/resource/default/key/one", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200 and set(r.json()) == {
            "protected",
            "encrypted_key",
            "iv",
            "ciphertext",
            "tag",
        }
        m = h.get("/metrics").text
    assert 'kbs_resource_reads_total{resource_path="default/key/one"} 2.0' in m
    assert 'kbs_attestation_successes_total{tee_type="sample"} 1.0' in m
    assert "kbs_http_response_size_bytes_count" in m
    assert 'kbs_attestation_duration_seconds_count{tee_type="sample"} 1.0' in m
    with kbs.admin() as a:
        assert a.delete("/kbs/v0/resource/default/key/one").status_code == 200
    with client(kbs) as c, pytest.raises(Exception, match="not found"):
        c.get_resource("default/key/one")


def test_cookie_session_rules(kbs: Kbs) -> None:
    tee = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "A" * 43, "y": "A" * 43}
    from trustpod.guest.tee_key import TeeKeyPair

    tee = TeeKeyPair.generate_ec().public_jwk()
    with kbs.http() as h:
        # missing cookie
        r = h.post("/kbs/v0/attest", json={})
        assert r.status_code == 401 and r.json()["type"] == ERR + "AttestationError"
        assert r.headers["x-request-id"] in r.json()["detail"]
        nonce, body = handshake(h, tee)
        set_cookie = h.cookies.jar
        assert any(c.name == "kbs-session-id" and len(c.value) == 32 for c in set_cookie)
        # wrong nonce
        bad = json.loads(json.dumps(body))
        bad["runtime-data"]["nonce"] = base64.b64encode(b"x" * 32).decode()
        r = h.post("/kbs/v0/attest", json=bad)
        assert r.status_code == 401, r.text
        # wrong report data
        bad = json.loads(json.dumps(body))
        bad["tee-evidence"]["primary_evidence"]["report_data"] = base64.b64encode(
            b"0" * 48
        ).decode()
        assert h.post("/kbs/v0/attest", json=bad).status_code == 401
        r1 = h.post("/kbs/v0/attest", json=body)
        assert r1.status_code == 200, r1.text
        # replay on the attested session: same token, whatever the body
        r2 = h.post("/kbs/v0/attest", json={"garbage": True})
        assert r2.status_code == 200 and r2.json()["token"] == r1.json()["token"]
        # the same evidence on a NEW session (new nonce) fails
        nonce2, _ = handshake(h, tee)
        assert nonce2 != nonce
        assert h.post("/kbs/v0/attest", json=body).status_code == 401


def test_expired_session_fake_clock(tmp_path: Path, ca: trustme.CA) -> None:
    clock = FixedClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    for k in make_kbs(tmp_path, ca, clock=clock):
        from trustpod.guest.tee_key import TeeKeyPair

        with k.http() as h:
            _, body = handshake(h, TeeKeyPair.generate_ec().public_jwk())
            # the cookie's Expires is in the fake past: httpx drops it, so send it by hand
            cookie = {"cookie": f"kbs-session-id={h.last_sid}"}  # type: ignore[attr-defined]
            h.cookies.clear()
            clock.advance(5 * 60 + 1)
            r = h.post("/kbs/v0/attest", json=body, headers=cookie)
            assert r.status_code == 401 and "expired" in r.json()["detail"]
            # deleted on read
            r = h.post("/kbs/v0/attest", json=body, headers=cookie)
            assert "not found" in r.json()["detail"]


def test_tampered_and_expired_token(kbs: Kbs) -> None:
    with kbs.admin() as a:
        a.post("/kbs/v0/resource/default/key/one", content=b"v")
    with client(kbs) as c:
        token = c.get_token()
    header, claims, sig = token.split(".")
    doc = json.loads(base64.urlsafe_b64decode(claims + "=="))
    doc["submods"]["cpu0"]["ear.status"] = "affirming"
    doc["exp"] += 10_000
    forged = f"{header}.{b64url(json.dumps(doc))}.{sig}"
    other = ExternalIssuer()  # signed by a key the KBS does not trust
    untrusted = other.issue({"tee-pubkey": {}})
    with kbs.http() as h:
        for bad in (forged, untrusted, "not.a.jwt", "x"):
            r = h.get(
                "/kbs/v0/resource/default/key/one", headers={"authorization": f"Bearer {bad}"}
            )
            assert r.status_code == 401, (bad, r.text)
        r = h.get("/kbs/v0/resource/default/key/one")
        assert r.status_code == 401 and r.json()["type"] == ERR + "TokenNotFound"
        kbs.clock.advance(3600)
        r = h.get("/kbs/v0/resource/default/key/one", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_policy_denial_is_explained(kbs: Kbs) -> None:
    with kbs.admin() as a:
        a.post("/kbs/v0/resource/default/key/one", content=b"v")
        r = a.post("/kbs/v0/resource-policy", json={"policy": b64url(PRESETS["deny-all"])})
        assert r.status_code == 200
        assert (
            a.post("/kbs/v0/resource-policy", json={"policy": b64url("pkg {")}).status_code == 400
        )
    with client(kbs) as c, pytest.raises(PolicyDenied) as info:
        c.get_resource("default/key/one")
    with client(kbs) as c:
        token = c.get_token()
    with kbs.http() as h:
        r = h.get("/kbs/v0/resource/default/key/one", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 403 and r.json()["type"] == ERR + "PolicyDeny"
    rid = r.headers["x-request-id"]
    assert rid in r.json()["detail"]
    assert "rego" not in r.json()["detail"] and "policy.allow" not in r.json()["detail"]
    assert info.value.reason
    with kbs.admin() as a:
        doc = a.get(f"/kbs/v0/trustpod/explain/{rid}").json()
    assert doc["explain"]["policy"] == "deny-all"
    assert doc["explain"]["submods"]["cpu0"]["ear.status"] == "affirming"
    # the built-in attestation service's own explanation reaches the audit entry
    appraisal = doc["explain"]["attestation"]
    assert appraisal["tee"] == "sample"
    assert appraisal["submods"]["cpu0"]["policy_id"] == "default_cpu"
    assert doc["status"] == 403


def test_default_policy_requires_affirming(tmp_path: Path, ca: trustme.CA) -> None:
    # no reference values registered: the built-in AS appraises sample evidence contraindicated
    for k in make_kbs(tmp_path, ca, references=False):
        with k.admin() as a:
            a.post("/kbs/v0/resource/default/key/one", content=b"v")
        with client(k) as c, pytest.raises(PolicyDenied):
            c.get_resource("default/key/one")
        with k.admin() as a:
            a.post("/kbs/v0/resource-policy", json={"policy": b64url(PRESETS["allow-all"])})
        with client(k) as c:
            assert c.get_resource("default/key/one") == b"v"


def test_admin_auth_untrusted(kbs: Kbs) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    now = int(kbs.clock.time())
    with kbs.http() as h:
        r = h.post("/kbs/v0/resource/default/key/x", content=b"v")
        assert r.status_code == 401 and r.json()["type"] == ERR + "AdminAuthAccess"
        wrong_key = sign_jwt(key, {"iss": "test", "role": "admin", "exp": now + 60})
        r = h.post(
            "/kbs/v0/resource/default/key/x",
            content=b"v",
            headers={"authorization": f"Bearer {wrong_key}"},
        )
        assert r.status_code == 401


def test_bad_input_never_500(kbs: Kbs) -> None:
    with kbs.http() as h:
        r = h.post("/kbs/v0/auth", content=b"{not json")
        assert r.status_code == 400 and r.json()["type"].startswith(ERR)
        r = h.post("/kbs/v0/auth", json={"version": "0.3.0", "tee": "sample", "extra-params": ""})
        assert r.status_code == 400 and "Version Mismatch" in r.json()["detail"]
        r = h.post("/kbs/v0/auth", json=[1, 2])
        assert r.status_code == 400
        r = h.post("/kbs/v0/auth", content=b"x" * (1024 * 1024 + 1))
        assert r.status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
            for _ in range(40):
                yield b"y" * 32768

        r = h.post("/kbs/v0/attest", content=chunks())
        assert r.status_code == 413 and "size limit" in r.json()["detail"]
        r = h.get("/kbs/v0/nope/a")
        assert r.status_code == 404 and r.json()["type"] == ERR + "PluginNotFound"
        r = h.get("/kbs/v0/auth")
        assert r.status_code == 404
        r = h.get("/kbs/v0/resource/.hidden/a/b")
        assert r.status_code == 404 and r.json()["type"] == ERR + "InvalidRequestPath"
        assert h.post("/metrics").status_code == 405
        assert h.get("/healthz").status_code == 200
        _, body = handshake(h, {"kty": "EC"})
        r = h.post("/kbs/v0/attest", json=body)
        assert r.status_code == 400


def test_head_with_admin_credentials_never_deletes(kbs: Kbs) -> None:
    """Regression: Starlette adds HEAD to GET routes; HEAD is a read, never a DELETE."""
    with kbs.admin() as a:
        assert a.post("/kbs/v0/resource/default/key/keep", content=b"kept").status_code == 200
        r = a.head("/kbs/v0/resource/default/key/keep")
        assert r.status_code in (401, 403) and r.content == b""  # no token: a refused read
    with client(kbs) as c:
        assert c.get_resource("default/key/keep") == b"kept"
