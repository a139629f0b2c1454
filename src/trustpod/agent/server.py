"""ttRPC server (containerd/ttrpc ``server.go`` semantics) on unix, TCP or vsock sockets.

Design (ADR 0900): one asyncio event loop in a background thread reads frames and writes
responses; each request's handler is a plain function run in a bounded thread pool, because
most agent RPCs block (runc, pipe reads, WaitProcess, GetOOMEvent). Requests on one connection
are served concurrently and answered in completion order, as ttRPC allows.

Per request, in order:
1. a frame longer than ``max_message_bytes`` is skipped and answered RESOURCE_EXHAUSTED;
2. frames that are not requests are ignored (ttrpc ignores them for forward compatibility);
3. a stream id that is even or not increasing is a protocol error: the connection is closed;
4. the payload is a ``ttrpc.Request``; undecodable → INVALID_ARGUMENT;
5. unknown service → UNIMPLEMENTED ``service S``; unknown method → UNIMPLEMENTED ``method M``;
6. the request message is decoded (INVALID_ARGUMENT on failure) and the handler runs, with the
   request's ``timeout_nano`` as a deadline (DEADLINE_EXCEEDED when it passes);
7. a ``TrustpodError`` becomes a status through ``rpc.status_for``; anything else INTERNAL;
8. a response over the limit is replaced by RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from trustpod._internal.unix_socket import bind_unix_socket
from trustpod.agent.framing import (
    HEADER_LEN,
    MAX_MESSAGE_BYTES,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    FrameHeader,
    encode_frame,
)
from trustpod.agent.listen import Address, parse_address
from trustpod.agent.pb import Protos
from trustpod.agent.rpc import Code, status_for
from trustpod.errors import ConfigError, DependencyError, TrustpodError

__all__ = ["Route", "ServerSettings", "TtrpcServer", "bind"]

log = logging.getLogger(__name__)

#: A handler: the decoded request message in, the response message out.
Handler = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Route:
    request_type: Any
    handler: Handler
    #: Run on the event loop itself: only for handlers that never block (no subprocess, no
    #: waiting, bounded work). A worker-thread hop costs ~200 us of CPU per call here.
    inline: bool = False


@dataclass(frozen=True, slots=True)
class ServerSettings:
    #: Largest frame payload read or written (ttrpc's 4 MiB).
    max_message_bytes: int = MAX_MESSAGE_BYTES
    #: Handler threads: every blocking RPC in flight (ReadStdout, WaitProcess, ...) holds one.
    max_workers: int = 64
    #: Requests in flight per connection before new ones get RESOURCE_EXHAUSTED.
    max_inflight_per_connection: int = 256
    #: Connections served at once; more are closed on accept.
    max_connections: int = 64
    #: Mode of a unix listening socket.
    unix_socket_mode: int = 0o600
    #: TCP on a non-loopback address exposes the agent API to the network (warns at start).
    insecure_non_loopback_tcp: bool = False


def _bind_unix(path: str, mode: int) -> socket.socket:
    try:
        return bind_unix_socket(path, mode)
    except OSError as exc:
        raise ConfigError(f"cannot bind unix socket {path}: {exc.strerror}") from exc


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(address: Address | str, settings: ServerSettings | None = None) -> socket.socket:
    """A listening socket for ``address`` (not yet accepting)."""
    settings = settings or ServerSettings()
    addr = parse_address(address) if isinstance(address, str) else address
    if addr.kind == "unix":
        sock = _bind_unix(addr.path, settings.unix_socket_mode)
    elif addr.kind == "tcp":
        if not _is_loopback(addr.host):
            if not settings.insecure_non_loopback_tcp:
                raise ConfigError(
                    f"ttRPC address {addr} is not loopback: the agent API has no authentication",
                    reason="agent.listen_not_loopback",
                    fix="listen on 127.0.0.1 behind a forwarder, or pass "
                    "--insecure-non-loopback-tcp",
                )
            log.warning("INSECURE: agent API listening on non-loopback %s", addr)
        family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
        try:
            sock = socket.create_server((addr.host, addr.port), family=family)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {addr}: {exc.strerror}") from exc
    else:
        family_vsock = getattr(socket, "AF_VSOCK", None)
        if family_vsock is None:
            raise DependencyError("this Python has no AF_VSOCK", reason="agent.no_vsock")
        try:
            sock = socket.socket(family_vsock, socket.SOCK_STREAM)
        except OSError as exc:
            raise DependencyError(
                f"vsock is not available on this kernel: {exc.strerror}",
                reason="agent.no_vsock",
                fix="load vsock/vhost_vsock (inside a VM: virtio-vsock) or use unix:/tcp:",
            ) from exc
        try:
            sock.bind((addr.cid, addr.port))
        except OSError as exc:
            sock.close()
            raise DependencyError(
                f"cannot bind {addr}: {exc.strerror}", reason="agent.no_vsock"
            ) from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _Connection:
    def __init__(
        self, server: TtrpcServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, stream_id: int, code: int, message: str, payload: bytes = b"") -> None:
        p = self.server.protos
        resp = p.ttrpc.Response(payload=payload)
        resp.status.code = code
        resp.status.message = message
        frame = encode_frame(stream_id, TYPE_RESPONSE, resp.SerializeToString(), max_bytes=1 << 62)
        async with self.lock:
            self.writer.write(frame)
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()

    async def run(self) -> None:
        settings = self.server.settings
        last_stream = 0
        try:
            while True:
                header = FrameHeader.parse(await self.reader.readexactly(HEADER_LEN))
                if header.length > settings.max_message_bytes:
                    remaining = header.length
                    while remaining:
                        chunk = await self.reader.read(min(remaining, 1 << 16))
                        if not chunk:
                            raise asyncio.IncompleteReadError(b"", remaining)
                        remaining -= len(chunk)
                    await self.send(
                        header.stream_id,
                        Code.RESOURCE_EXHAUSTED,
                        f"message length {header.length} exceed maximum message size of "
                        f"{settings.max_message_bytes}",
                    )
                    continue
                payload = await self.reader.readexactly(header.length)
                if header.type != TYPE_REQUEST:
                    continue
                if header.stream_id % 2 != 1 or header.stream_id <= last_stream:
                    log.warning("ttRPC protocol error: stream id %d", header.stream_id)
                    return
                last_stream = header.stream_id
                if len(self.tasks) >= settings.max_inflight_per_connection:
                    await self.send(
                        header.stream_id, Code.RESOURCE_EXHAUSTED, "too many requests in flight"
                    )
                    continue
                task = asyncio.create_task(self.handle(header.stream_id, payload))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            for task in list(self.tasks):
                task.cancel()
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def handle(self, stream_id: int, payload: bytes) -> None:
        code, message, out = self.server.protos_decode_and_route(payload)
        if out is None:
            await self.send(stream_id, code, message)
            return
        route, request, timeout = out
        if route.inline:
            code, message, body = self.server.invoke(route, request)
        else:
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(self.server.pool, self.server.invoke, route, request)
            try:
                code, message, body = await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                code, message, body = Code.DEADLINE_EXCEEDED, "deadline exceeded", b""
            except RuntimeError:  # the pool is shut down (server stopping)
                code, message, body = Code.UNAVAILABLE, "agent is stopping", b""
        await self.send(stream_id, *self._bounded_reply(code, message, body))

    def _bounded_reply(self, code: int, message: str, body: bytes) -> tuple[int, str, bytes]:
        if len(body) > self.server.settings.max_message_bytes:
            return (
                Code.RESOURCE_EXHAUSTED,
                f"response of {len(body)} bytes exceeds the maximum message size",
                b"",
            )
        return code, message, body


class TtrpcServer:
    """Serves ``routes`` (``{(service, method): Route}``) on one or more listening sockets."""

    def __init__(
        self,
        protos: Protos,
        routes: Mapping[tuple[str, str], Route],
        settings: ServerSettings | None = None,
    ) -> None:
        self.protos = protos
        self.routes = dict(routes)
        self.services = {service for service, _ in self.routes}
        self.settings = settings or ServerSettings()
        self.pool = ThreadPoolExecutor(self.settings.max_workers, thread_name_prefix="ttrpc")
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.Server] = []
        self._connections = 0
        self.addresses: list[str] = []

    # -- request path (steps 4-7) --
    def protos_decode_and_route(
        self, payload: bytes
    ) -> tuple[int, str, tuple[Route, Any, float | None] | None]:
        req = self.protos.ttrpc.Request()
        try:
            req.ParseFromString(payload)
        except DecodeError:
            return Code.INVALID_ARGUMENT, "cannot decode ttrpc.Request", None
        if req.service not in self.services:
            return Code.UNIMPLEMENTED, f"service {req.service}", None
        route = self.routes.get((req.service, req.method))
        if route is None:
            return Code.UNIMPLEMENTED, f"method {req.method}", None
        message = route.request_type()
        try:
            message.ParseFromString(req.payload)
        except DecodeError:
            return Code.INVALID_ARGUMENT, f"cannot decode {req.method} request", None
        timeout = req.timeout_nano / 1e9 if req.timeout_nano > 0 else None
        return Code.OK, "", (route, message, timeout)

    @staticmethod
    def invoke(route: Route, request: Any) -> tuple[int, str, bytes]:
        try:
            response = route.handler(request)
            return Code.OK, "", response.SerializeToString()
        except TrustpodError as exc:
            code, message = status_for(exc)
            log.info("ttRPC %s failed: %s", type(request).__name__, message)
            return code, message, b""
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # pyo3 panics derive from BaseException
            log.exception("ttRPC handler for %s crashed", type(request).__name__)
            return Code.INTERNAL, f"internal error: {type(exc).__name__}", b""

    # -- sockets --
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._connections >= self.settings.max_connections:
            writer.close()
            return
        self._connections += 1
        try:
            await _Connection(self, reader, writer).run()
        except asyncio.CancelledError:
            pass  # server stopping; asyncio would log a cancelled connection task as an error
        finally:
            self._connections -= 1

    async def _listen(self, sock: socket.socket) -> None:
        limit = self.settings.max_message_bytes + HEADER_LEN
        if sock.family == socket.AF_UNIX:
            srv = await asyncio.start_unix_server(self._accept, sock=sock, limit=limit)
        else:
            srv = await asyncio.start_server(self._accept, sock=sock, limit=limit)
        self._servers.append(srv)

    def start(self, *addresses: str | Address, timeout_s: float = 10.0) -> list[str]:
        """Bind every address and serve them from a background thread; returns the bound
        addresses (``tcp:127.0.0.1:PORT`` with the real port when 0 was asked)."""
        socks = [bind(a, self.settings) for a in addresses]
        bound: list[str] = []
        for a, s in zip(addresses, socks, strict=True):
            addr = parse_address(a) if isinstance(a, str) else a
            if addr.kind == "tcp":
                host, port = s.getsockname()[:2]
                addr = Address("tcp", host=host, port=port)
            bound.append(str(addr))
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            for s in socks:
                loop.run_until_complete(self._listen(s))
            ready.set()
            loop.run_forever()
            for srv in self._servers:
                srv.close()
            pending = asyncio.all_tasks(loop)
            for t in pending:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="ttrpc-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            raise DependencyError("ttRPC server did not start", reason="agent.server_start")
        self.addresses = bound
        for a in bound:
            log.info("agent ttRPC listening on %s", a)
        return bound

    def stop(self) -> None:
        loop = self.loop
        if loop is not None and self._thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
        self._thread = None
        self.pool.shutdown(wait=False, cancel_futures=True)
        for a in self.addresses:
            if a.startswith("unix:"):
                with contextlib.suppress(OSError):
                    os.unlink(a.removeprefix("unix:"))
