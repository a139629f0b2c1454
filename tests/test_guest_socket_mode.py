"""Issue 12, security defect 6: the guest API unix socket is created 0600 (it hands out the AA
token and the TEE key), whatever the process umask, and is removed at shutdown."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from trustpod.guest.run import API_SOCKET_MODE, _GuestServer, bind_unix_socket


def test_bind_unix_socket_is_private(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "api.sock"
    sock = bind_unix_socket(str(path))
    try:
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert stat.S_IMODE(path.lstat().st_mode) == API_SOCKET_MODE == 0o600
    finally:
        sock.close()
    # a stale socket left by a crash is replaced, not an error
    again = bind_unix_socket(str(path))
    again.close()


def test_guest_server_socket_mode_while_serving(tmp_path: Path, open_umask: None) -> None:
    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", hello)])
    path = tmp_path / "api.sock"
    server = _GuestServer(uvicorn.Config(app, log_level="warning", lifespan="off"), str(path))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    try:
        # uvicorn's own uds binding chmod-ed it to 0666 (srw-rw-rw-)
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        transport = httpx.HTTPTransport(uds=str(path))
        with httpx.Client(transport=transport, base_url="http://guest") as c:
            assert c.get("/").text == "ok"
    finally:
        server.should_exit = True
        thread.join(10)
    assert not path.exists()
