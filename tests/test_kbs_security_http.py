"""Issue 12, security defects 2, 3, 5 and 8 (body timeout, label cap), over a real uvicorn
server on 127.0.0.1: what an unauthenticated /auth may store, deep JSON, log injection."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbs_support import builtin_kbs, serve
from trustpod._internal.clock import FixedClock
from trustpod._internal.json_limits import json_depth, loads
from trustpod.errors import EvidenceError
from trustpod.kbs.config import load_config
from trustpod.kbs.init_dir import init_kbs_dir
from trustpod.kbs.logsetup import JsonFormatter, TextFormatter, escape_control
from trustpod.kbs.sessions import SessionStore
from trustpod.storage.sqlite import SqliteStore

ERR = "https://github.com/confidential-containers/kbs/errors/"
DEEP = b"[" * 10_000 + b"]" * 10_000


@dataclass
class Kbs:
    url: str
    dir: Path
    token: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def admin(self) -> httpx.Client:
        c = self.client()
        c.headers["authorization"] = f"Bearer {self.token}"
        return c

    def store_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.glob("kbs.sqlite*"))


@pytest.fixture
def kbs_factory(tmp_path: Path) -> Iterator[Any]:
    stack: list[Any] = []

    def make(extra: str = "", name: str = "kbs") -> Kbs:
        d = tmp_path / name
        res = init_kbs_dir(d, "127.0.0.1:0", insecure_http=True)
        if extra:
            text = res.config.read_text().replace("[trustpod]\n", f"[trustpod]\n{extra}\n")
            res.config.write_text(text)
        app, _ = builtin_kbs(load_config(res.config), references=False)
        ctx = serve(app)
        url = ctx.__enter__()
        stack.append(ctx)
        return Kbs(url, d, res.admin_token.read_text().strip())

    yield make
    for ctx in stack:
        ctx.__exit__(None, None, None)


def _auth(extra: Any) -> dict[str, Any]:
    return {"version": "0.4.0", "tee": "sample", "extra-params": extra}


# -- 2: what /auth may store ---------------------------------------------------------------------
def test_big_extra_params_refused_and_store_does_not_grow(kbs_factory: Any) -> None:
    kbs = kbs_factory()
    with kbs.client() as c:
        assert c.post("/kbs/v0/auth", json=_auth("")).status_code == 200
        before = kbs.store_bytes()
        big = json.dumps(_auth("x" * 1_900_000)).encode()
        start = time.monotonic()
        for _ in range(100):
            r = c.post("/kbs/v0/auth", content=big, headers={"content-type": "application/json"})
            assert r.status_code == 400, r.text
            assert "extra-params" in r.json()["detail"]
        elapsed = time.monotonic() - start
        # small extra-params (what guests send) still work
        ok = c.post("/kbs/v0/auth", json=_auth({"supported-hash-algorithms": ["sha384"]}))
        assert ok.status_code == 200
    growth = kbs.store_bytes() - before
    # the defect: 100 such requests grew the file by 190 MB
    assert growth < 1_000_000, (growth, elapsed)


def test_session_cap(kbs_factory: Any) -> None:
    kbs = kbs_factory("max_sessions = 20")
    with kbs.client() as c:
        codes = [c.post("/kbs/v0/auth", json=_auth("")).status_code for _ in range(25)]
    assert codes[:20] == [200] * 20
    assert set(codes[20:]) == {503}


def test_expired_sessions_purged_and_space_reclaimed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "kbs.sqlite")
    clock = FixedClock(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    sessions = SessionStore(store, clock, timeout_minutes=5)
    for _ in range(500):
        sessions.create(_auth("y" * 4000), {"nonce": "n", "extra-params": ""})
    store.reclaim()  # checkpoint: the rows are in the main file
    full = (tmp_path / "kbs.sqlite").stat().st_size
    assert full > 2_000_000
    clock.advance(6 * 60)
    assert sessions.purge_expired() == 500
    after = sum(p.stat().st_size for p in tmp_path.glob("kbs.sqlite*"))
    assert after < full / 10, (full, after)
    store.close()


# -- 3: deep JSON ---------------------------------------------------------------------------------
def test_json_depth_helper() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[["}]}') == 3
    assert loads(b'{"a": "[[[[[[[[[[[[[[[["}', max_depth=2) == {"a": "[" * 16}
    assert loads(b'"\\"[[["', max_depth=0) == '"[[['
    with pytest.raises(EvidenceError) as info:
        loads(DEEP)
    assert info.value.reason == "json.depth"


def _depth(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    return 0


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_json_depth_matches_the_parsed_value(value: Any) -> None:
    raw = json.dumps(value).encode()
    assert json_depth(raw) == _depth(value)
    assert loads(raw, max_depth=_depth(value)) == value


@pytest.mark.parametrize(
    ("method", "path", "admin"),
    [
        ("POST", "/kbs/v0/auth", False),
        ("POST", "/kbs/v0/attest", False),
        ("POST", "/kbs/v0/resource-policy", True),
        ("POST", "/kbs/v0/attestation-policy", True),
        ("POST", "/kbs/v0/reference-value", True),
    ],
)
def test_deep_json_is_400(kbs_factory: Any, method: str, path: str, admin: bool) -> None:
    kbs = kbs_factory()
    with kbs.admin() if admin else kbs.client() as c:
        if path.endswith("attest"):
            c.post("/kbs/v0/auth", json=_auth(""))  # a session cookie first
        r = c.request(method, path, content=DEEP, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["type"] == ERR + "SerdeError"


def test_deep_json_in_tokens_is_not_500(kbs_factory: Any) -> None:
    kbs = kbs_factory()
    header = base64.urlsafe_b64encode(b"[" * 10_000).rstrip(b"=").decode()
    token = f"{header}.e30.c2ln"
    with kbs.client() as c:
        admin = c.post(
            "/kbs/v0/resource-policy",
            content=b"{}",
            headers={"authorization": f"Bearer {token}"},
        )
        resource = c.get("/kbs/v0/resource/a/b/c", headers={"authorization": f"Bearer {token}"})
    assert admin.status_code in (401, 403) and resource.status_code == 401


# -- 5: log injection -----------------------------------------------------------------------------
def test_control_characters_escaped() -> None:
    assert escape_control("a\nb\r\x1b[31m\x00\u2028\\") == "a\\x0ab\\x0d\\x1b[31m\\x00\\u2028\\\\"
    rec = logging.LogRecord("trustpod.kbs", logging.INFO, "f", 1, "path %s", ("x\ny",), None)
    line = TextFormatter().format(rec)
    assert "\n" not in line and "x\\x0ay" in line and " INFO " in line
    doc = json.loads(JsonFormatter().format(rec))
    assert doc["message"] == "path x\ny" and doc["level"] == "INFO" and "time" in doc


def test_request_path_control_characters_do_not_reach_the_log(kbs_factory: Any) -> None:
    kbs = kbs_factory()
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Capture()
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("trustpod")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with kbs.client() as c:
            # CR returns to the line start (a forged line over the real one), ESC drives
            # the terminal; (a newline never reaches a handler: Starlette's routes refuse it)
            forged = "/kbs/v0/resource/a%0D2026-12-01 00:00:00 INFO forged%1B[2J%08/b/c"
            r = c.get(forged)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert r.status_code in (401, 404)
    denied = [x for x in lines if "denied request" in x]
    assert denied, lines
    for line in denied:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line
        assert "forged\\x1b[2J\\x08/b/c" in line
        assert r.headers["x-request-id"] in line


# -- 8: stalled bodies, metric labels -------------------------------------------------------------
def test_stalled_body_times_out(kbs_factory: Any) -> None:
    kbs = kbs_factory("request_body_timeout_s = 1")
    host, port = kbs.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b"POST /kbs/v0/auth HTTP/1.1\r\nhost: kbs\r\ncontent-type: application/json\r\n"
            b'content-length: 1000\r\n\r\n{"version": '
        )
        start = time.monotonic()
        reply = s.recv(65536)
        waited = time.monotonic() - start
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert 0.5 < waited < 5


def test_metric_label_length_capped(kbs_factory: Any) -> None:
    kbs = kbs_factory("max_resource_path_label_chars = 64")
    long_tag = "t" * 300
    with kbs.admin() as c:
        assert c.post("/kbs/v0/resource/default/key/short", content=b"v").status_code == 200
        assert c.post(f"/kbs/v0/resource/default/key/{long_tag}", content=b"v").status_code == 200
        text = c.get("/metrics").text
    assert 'resource_path="default/key/short"' in text
    assert long_tag not in text
    assert 'kbs_resource_writes_total{resource_path="__other__"} 1.0' in text
