"""The exact-path dispatch of the hot KBS routes answers exactly as Starlette's router does.

Each request goes once through ``KbsAsgiApp`` (dispatch for auth/attest/resource GET) and once
through plain ``Starlette.__call__`` on the same app (router + middlewares); status, body and
header names must be equal (the request id differs per request, but must be there on errors).
"""

from __future__ import annotations

import asyncio
import logging
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from kbs_support import builtin_kbs
from trustpod.kbs.config import parse_config
from trustpod.kbs.logsetup import current_request_id
from trustpod.storage.memory import MemoryStore

CONFIG = (
    "[http_server]\ninsecure_http = true\n[admin]\nauthorization_mode = "
    '"InsecureAllowAll"\n[trustpod]\nrequest_body_timeout_s = 1\n'
)
_VOLATILE = {"x-request-id", "set-cookie", "date"}

#: (method, path, body): hot routes with good and bad input, and what must fall back.
CASES: list[tuple[str, str, bytes | None]] = [
    ("POST", "/kbs/v0/auth", b"not json"),
    ("POST", "/kbs/v0/auth", b'{"version": "0.4.0", "tee": "se", "extra-params": ""}'),
    ("POST", "/kbs/v0/auth", b"[" * 200 + b"]" * 200),
    ("POST", "/kbs/v0/attest", b"{}"),
    ("GET", "/kbs/v0/auth", None),
    ("PUT", "/kbs/v0/attest", b"{}"),
    ("GET", "/kbs/v0/resource/default/key/one", None),
    ("GET", "/kbs/v0/resource/default/key", None),
    ("GET", "/kbs/v0/resource/default/key/one%0A", None),
    ("GET", "/kbs/v0/resource/", None),
    ("HEAD", "/kbs/v0/resource/default/key/one", None),
    ("GET", "/kbs/v0/resource/default/key/one?x=1", None),
    ("GET", "/kbs/v0/authx", None),
    ("GET", "/kbs/v0/auth/", None),
]


def _app(tmp_path: Path) -> Any:
    app, core = builtin_kbs(
        parse_config(tomllib.loads(CONFIG), tmp_path / "k.toml"), store=MemoryStore()
    )
    core.set_resource("default/key/one", b"s3cret")
    return app


def _body(r: httpx.Response) -> bytes:
    rid = r.headers.get("x-request-id")  # error bodies name the request id
    return r.content.replace(rid.encode(), b"<rid>") if rid else r.content


async def _both(tmp_path: Path, method: str, path: str, body: bytes | None) -> list[httpx.Response]:
    """The request through the dispatch of one app and the router of another (same state)."""
    other = _app(tmp_path / "router")

    async def router_only(scope: Scope, receive: Receive, send: Send) -> None:
        await Starlette.__call__(other, scope, receive, send)

    out = []
    for target in (_app(tmp_path), router_only):
        transport = httpx.ASGITransport(app=target)
        async with httpx.AsyncClient(transport=transport, base_url="http://kbs") as c:
            out.append(await c.request(method, path, content=body))
    return out


@pytest.mark.parametrize(("method", "path", "body"), CASES)
def test_dispatch_equals_router(tmp_path: Path, method: str, path: str, body: bytes | None) -> None:
    fast, slow = asyncio.run(_both(tmp_path, method, path, body))
    assert fast.status_code == slow.status_code
    assert _body(fast) == _body(slow)
    assert {k for k in fast.headers if k not in _VOLATILE} == {
        k for k in slow.headers if k not in _VOLATILE
    }
    if fast.status_code >= 400 and fast.headers.get("content-type") == "application/json":
        assert fast.headers.get("x-request-id") and slow.headers.get("x-request-id")


def test_full_flow_through_dispatch(tmp_path: Path) -> None:
    import base64

    from test_kbs_app import runtime_data_digest
    from trustpod.guest.tee_key import TeeKeyPair

    app = _app(tmp_path)
    jwk = TeeKeyPair.generate_ec().public_jwk()
    seen: list[str | None] = []  # request ids current when the attestation thread logs

    class _Ids(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(current_request_id())

    handler = _Ids(logging.INFO)
    service_log = logging.getLogger("trustpod.attestation.service")
    service_log.addHandler(handler)
    level = service_log.level
    service_log.setLevel(logging.INFO)

    async def go() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kbs") as c:
            auth = {"version": "0.4.0", "tee": "sample", "extra-params": ""}
            r = await c.post("/kbs/v0/auth", json=auth)
            assert r.status_code == 200 and "kbs-session-id=" in r.headers["set-cookie"]
            nonce = r.json()["nonce"]
            digest = base64.b64encode(runtime_data_digest(nonce, jwk, "")).decode()
            body = {
                "runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
                "tee-evidence": {
                    "primary_evidence": {"svn": "1", "report_data": digest},
                    "additional_evidence": "",
                },
            }
            r = await c.post("/kbs/v0/attest", json=body)
            assert r.status_code == 200, r.text
            assert "kbs-session-id=" in r.headers["set-cookie"]
            r = await c.get("/kbs/v0/resource/default/key/one")
            assert r.status_code == 200 and "ciphertext" in r.json()

    try:
        asyncio.run(go())
    finally:
        service_log.removeHandler(handler)
        service_log.setLevel(level)
    # the appraisal runs on the executor, in the request's context (its log line has the id)
    assert seen and all(rid is not None and len(rid) == 32 for rid in seen)


def test_stalled_body_times_out_on_the_dispatched_route(tmp_path: Path) -> None:
    app = _app(tmp_path)
    sent: list[dict[str, Any]] = []

    async def go() -> None:
        first = True

        async def receive() -> dict[str, Any]:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": b'{"ver', "more_body": True}
            await asyncio.sleep(5)  # the rest never comes
            return {"type": "http.disconnect"}

        async def send(msg: dict[str, Any]) -> None:
            sent.append(msg)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/kbs/v0/auth",
            "raw_path": b"/kbs/v0/auth",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        await asyncio.wait_for(app(scope, receive, send), 3)

    asyncio.run(go())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 408
    assert any(k == b"x-request-id" for k, _ in sent[0]["headers"])


class _FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None


def test_coalescing_transport_one_write_per_loop_step() -> None:
    from trustpod.kbs.http_protocol import CoalescingTransport

    async def go() -> None:
        raw = _FakeTransport()
        t: Any = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        t.write(memoryview(b"ok"))
        assert raw.writes == []
        await asyncio.sleep(0)
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
        assert t.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is passed through
        t.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        t.close()  # what was written goes out before the close
        assert raw.writes[-1] == b"HTTP/1.1 400 Bad Request\r\n\r\n" and raw.closed
        await asyncio.sleep(0)  # the scheduled flush finds nothing left
        assert len(raw.writes) == 2
        t.write(b"late")
        await asyncio.sleep(0)  # a closed transport is not written to
        assert len(raw.writes) == 2

    asyncio.run(go())


def test_kbs_serve_uses_the_coalescing_protocol() -> None:
    from trustpod.kbs.http_protocol import CoalescingHttpToolsProtocol
    from trustpod.kbs.tls import KbsUvicornConfig

    config = KbsUvicornConfig(lambda *a: None)
    config.load()
    assert config.http_protocol_class is CoalescingHttpToolsProtocol
