"""Host-side ttRPC client: what a shim (or the peer-pods work) drives a pod's agent with.

Thread-safe and multiplexed like containerd/ttrpc's client: calls from many threads share one
connection, each on its own odd, increasing stream id; a reader thread hands each response to
its caller. Blocking calls (WaitProcess, ReadStdout, GetOOMEvent) only block their caller.

    with AgentClient("unix:/run/agent.sock") as agent:
        agent.call("CreateSandbox", agent.pb.grpc.CreateSandboxRequest(sandbox_id="p1"))
        wait = agent.pb.grpc.WaitProcessRequest(container_id="c")
        status = agent.call("WaitProcess", wait).status
"""

from __future__ import annotations

import contextlib
import socket
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any, Self

from google.protobuf.message import DecodeError

from trustpod.agent.framing import (
    MAX_MESSAGE_BYTES,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    FrameDecoder,
    encode_frame,
)
from trustpod.agent.listen import Address, parse_address
from trustpod.agent.pb import AGENT_SERVICE, Protos, protos
from trustpod.agent.rpc import Code, RpcError
from trustpod.errors import DependencyError, EvidenceError

__all__ = ["DEFAULT_TIMEOUT_S", "AgentClient", "TtrpcClient", "connect"]

#: Default per-call deadline, sent as ``timeout_nano`` and waited for locally (+1 s).
DEFAULT_TIMEOUT_S = 60.0


def connect(address: Address | str, timeout_s: float = 10.0) -> socket.socket:
    addr = parse_address(address) if isinstance(address, str) else address
    try:
        if addr.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout_s)
            sock.connect(addr.path)
        elif addr.kind == "tcp":
            sock = socket.create_connection((addr.host, addr.port), timeout=timeout_s)
        else:
            sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
            sock.settimeout(timeout_s)
            sock.connect((addr.cid, addr.port))
    except OSError as exc:
        raise DependencyError(
            f"cannot connect to the agent at {addr}: {exc.strerror or exc}",
            reason="agent.connect",
        ) from exc
    sock.settimeout(None)
    return sock


class TtrpcClient:
    def __init__(
        self,
        address: Address | str,
        *,
        pb: Protos | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.pb = pb or protos()
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self._sock = connect(address)
        self._send_lock = threading.Lock()
        self._state = threading.Lock()
        self._next = 1
        self._waiting: dict[int, Future[bytes]] = {}
        self._closed: BaseException | None = None
        self._reader = threading.Thread(target=self._read_loop, name="ttrpc-client", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        decoder = FrameDecoder(self.max_message_bytes)
        error: BaseException = DependencyError(
            "agent connection closed", reason="agent.disconnected"
        )
        try:
            while True:
                data = self._sock.recv(1 << 16)
                if not data:
                    break
                for frame in decoder.feed(data):
                    if frame.header.type != TYPE_RESPONSE:
                        continue
                    with self._state:
                        fut = self._waiting.pop(frame.header.stream_id, None)
                    if fut is None:
                        continue
                    if frame.oversized:
                        fut.set_exception(
                            RpcError(Code.RESOURCE_EXHAUSTED, "response exceeds the size limit")
                        )
                    else:
                        fut.set_result(frame.payload)
        except OSError as exc:
            error = DependencyError(f"agent connection failed: {exc}", reason="agent.disconnected")
        with self._state:
            self._closed = error
            waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            fut.set_exception(error)

    def call_raw(
        self, service: str, method: str, payload: bytes, *, timeout_s: float | None = None
    ) -> bytes:
        """Send one request; return the response payload or raise ``RpcError``."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        req = self.pb.ttrpc.Request(
            service=service, method=method, payload=payload, timeout_nano=int(timeout * 1e9)
        )
        fut: Future[bytes] = Future()
        with self._state:
            if self._closed is not None:
                raise self._closed
            stream_id = self._next
            self._next += 2
            self._waiting[stream_id] = fut
        frame = encode_frame(
            stream_id, TYPE_REQUEST, req.SerializeToString(), max_bytes=self.max_message_bytes
        )
        try:
            with self._send_lock:
                self._sock.sendall(frame)
        except OSError as exc:
            with self._state:
                self._waiting.pop(stream_id, None)
            raise DependencyError(f"cannot send to the agent: {exc}") from exc
        try:
            body = fut.result(timeout + 1.0)
        except FutureTimeout as exc:
            with self._state:
                self._waiting.pop(stream_id, None)
            raise RpcError(Code.DEADLINE_EXCEEDED, f"{method}: no answer in {timeout}s") from exc
        resp = self.pb.ttrpc.Response()
        try:
            resp.ParseFromString(body)
        except DecodeError as exc:
            raise EvidenceError("cannot decode ttrpc.Response", reason="ttrpc.decode") from exc
        if resp.HasField("status") and resp.status.code != Code.OK:
            raise RpcError(resp.status.code, resp.status.message)
        payload_out: bytes = resp.payload
        return payload_out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._reader.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AgentClient(TtrpcClient):
    """``grpc.AgentService`` calls by method name, typed by the service descriptor."""

    def call(self, method: str, request: Any, *, timeout_s: float | None = None) -> Any:
        desc = self.pb.methods(AGENT_SERVICE).get(method)
        if desc is None:
            raise RpcError(Code.UNIMPLEMENTED, f"method {method} is not in agent.proto")
        body = self.call_raw(
            AGENT_SERVICE, method, request.SerializeToString(), timeout_s=timeout_s
        )
        out = self.pb.message(desc.output_type.full_name)()
        out.ParseFromString(body)
        return out
