"""ttRPC as kata/containerd speak it: framing (hypothesis), envelopes, statuses, limits, sockets.

The server under test is the real ``TtrpcServer`` on 127.0.0.1 TCP and a unix socket; some tests
talk raw bytes to it to check the wire format byte for byte.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.agent.client import AgentClient, TtrpcClient
from trustpod.agent.framing import (
    HEADER_LEN,
    MAX_MESSAGE_BYTES,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    FrameDecoder,
    FrameError,
    FrameHeader,
    encode_frame,
)
from trustpod.agent.listen import VMADDR_CID_ANY, parse_address
from trustpod.agent.pb import (
    AGENT_SERVICE,
    compile_descriptor_set,
    descriptor_file_name,
    protos,
    sources_digest,
)
from trustpod.agent.rpc import Code, RpcError
from trustpod.agent.server import Route, ServerSettings, TtrpcServer, bind
from trustpod.errors import ConfigError, DependencyError, NotFoundError, PolicyDenied

PB = protos()

# -- framing ------------------------------------------------------------


def test_header_layout_is_ttrpc() -> None:
    raw = encode_frame(7, TYPE_REQUEST, b"abc", flags=0)
    assert raw == struct.pack(">IIBB", 3, 7, 1, 0) + b"abc"
    assert len(raw) - 3 == HEADER_LEN == 10
    assert MAX_MESSAGE_BYTES == 4 * 1024 * 1024
    assert FrameHeader.parse(raw[:10]) == FrameHeader(3, 7, 1, 0)
    with pytest.raises(FrameError):
        FrameHeader.parse(raw[:9])
    with pytest.raises(FrameError):
        encode_frame(1, TYPE_REQUEST, b"x" * 11, max_bytes=10)


frames = st.lists(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 255), st.binary(max_size=300)),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(frames, st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_decoder_any_chunking_gives_the_frames_back(
    items: list[tuple[int, int, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(sid, t, p) for sid, t, p in items)
    decoder = FrameDecoder()
    out = []
    pos, i = 0, 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        out += decoder.feed(stream[pos : pos + n])
        pos, i = pos + n, i + 1
    assert [(f.header.stream_id, f.header.type, f.payload) for f in out] == items
    assert decoder.buffered == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.integers(0, 200))
def test_decoder_memory_is_bounded_on_garbage(data: bytes, limit: int) -> None:
    decoder = FrameDecoder(max_bytes=limit)
    for frame in decoder.feed(data):
        assert frame.oversized or len(frame.payload) <= limit
        assert frame.oversized == (frame.header.length > limit)
    assert decoder.buffered <= limit + HEADER_LEN


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=11, max_size=100), st.binary(max_size=10))
def test_oversized_frame_is_skipped_and_the_next_one_survives(big: bytes, small: bytes) -> None:
    decoder = FrameDecoder(max_bytes=10)
    got = decoder.feed(encode_frame(1, 1, big, max_bytes=1000) + encode_frame(3, 1, small))
    assert [f.oversized for f in got] == [True, False]
    assert got[0].payload == b"" and got[1].payload == small


# -- messages ------------------------------------------------------------


def test_field_numbers_match_upstream() -> None:
    """A sample of kata's numbering (agent.proto / oci.proto / types.proto / ttrpc.proto)."""
    expected = {
        "grpc.CreateContainerRequest": {"container_id": 1, "exec_id": 2, "OCI": 6, "storages": 5},
        "grpc.ExecProcessRequest": {"process": 4, "stdin_port": 5},
        "grpc.ReadStreamRequest": {"len": 3},
        "grpc.CopyFileRequest": {"path": 1, "file_size": 2, "offset": 7, "data": 8},
        "grpc.Spec": {"Version": 1, "Process": 2, "Annotations": 7, "Linux": 8, "Windows": 10},
        "grpc.Linux": {"Namespaces": 6, "IntelRdt": 13},
        "grpc.LinuxSyscall": {"errnoret": 3, "Args": 4},
        "types.Interface": {"IPAddresses": 3, "hwAddr": 5, "raw_flags": 8},
        "ttrpc.Request": {"service": 1, "method": 2, "payload": 3, "timeout_nano": 4},
        "ttrpc.Response": {"status": 1, "payload": 2},
        "ttrpc.Status": {"code": 1, "message": 2, "details": 3},
    }
    for name, fields in expected.items():
        desc = PB.message(name).DESCRIPTOR
        assert {f: desc.fields_by_name[f].number for f in fields} == fields, name
    assert PB.service().full_name == AGENT_SERVICE == "grpc.AgentService"
    req = PB.ttrpc.Request(service="s", method="m", payload=b"p", timeout_nano=5)
    assert req.SerializeToString() == b"\n\x01s\x12\x01m\x1a\x01p \x05"


def test_descriptor_set_compiles_into_the_cache_and_tracks_the_sources(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[1] / "src" / "trustpod" / "agent" / "protos"
    copy = tmp_path / "protos"
    copy.mkdir()
    for f in src.glob("*.proto"):
        (copy / f.name).write_bytes(f.read_bytes())
    digest = sources_digest(copy)
    assert digest == sources_digest()
    out = tmp_path / "cache" / descriptor_file_name(digest)
    compile_descriptor_set(out, copy)
    assert out.stat().st_size > 1000
    (copy / "types.proto").write_text((copy / "types.proto").read_text() + "\n// edited\n")
    assert sources_digest(copy) != digest
    (copy / "types.proto").write_text("syntax = 'proto3'; message {")
    with pytest.raises(ConfigError):
        compile_descriptor_set(tmp_path / "bad.binpb", copy)


# -- addresses ------------------------------------------------------------


def test_listen_addresses() -> None:
    assert str(parse_address("unix:///run/a.sock")) == "unix:/run/a.sock"
    assert parse_address("tcp:127.0.0.1:15150").port == 15150
    assert parse_address("tcp:[::1]:1").host == "::1"
    assert parse_address("vsock:1024").cid == VMADDR_CID_ANY
    assert parse_address("vsock://-1:1024").port == 1024
    assert parse_address("vsock:3:1024").cid == 3
    for bad in ("1024", "tcp:1", "tcp:h:99999", "vsock:x", "http:1", "unix:"):
        with pytest.raises(ConfigError):
            parse_address(bad)
    with pytest.raises(ConfigError) as exc:
        bind("tcp:0.0.0.0:0")
    assert exc.value.reason == "agent.listen_not_loopback"


def test_vsock_binds_or_fails_clearly() -> None:
    """No vhost-vsock here: binding may work (the socket family exists) but nothing can connect;
    either way the error is a named DependencyError, never a hang or a raw OSError."""
    try:
        sock = bind("vsock:0")
    except DependencyError as exc:
        assert exc.reason == "agent.no_vsock"
        return
    sock.close()
    with pytest.raises(DependencyError) as exc2:
        TtrpcClient("vsock:1:1", pb=PB)._sock.close()  # CID 1 = local loopback
    assert exc2.value.reason == "agent.connect"


# -- server ------------------------------------------------------------

release = threading.Event()


def _details(req: Any) -> Any:
    return PB.grpc.GuestDetailsResponse(mem_block_size_bytes=42)


def _start(req: Any) -> Any:
    cid = req.container_id
    if cid == "denied":
        raise PolicyDenied("nope")
    if cid == "missing":
        raise NotFoundError("Invalid container id")
    if cid == "crash":
        raise ValueError("bug")
    if cid == "block":
        release.wait(10)
    if cid == "slow":
        time.sleep(2)
    return PB.empty.Empty()


def _read(req: Any) -> Any:
    return PB.grpc.ReadStreamResponse(data=b"x" * req.len)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    routes = {
        (AGENT_SERVICE, "GetGuestDetails"): Route(PB.grpc.GuestDetailsRequest, _details),
        (AGENT_SERVICE, "StartContainer"): Route(PB.grpc.StartContainerRequest, _start),
        (AGENT_SERVICE, "ReadStdout"): Route(PB.grpc.ReadStreamRequest, _read),
    }
    srv = TtrpcServer(PB, routes, ServerSettings(max_message_bytes=1 << 16))
    sock = tmp_path_factory.mktemp("tt") / "agent.sock"
    addrs = srv.start("tcp:127.0.0.1:0", f"unix:{sock}")
    yield addrs
    release.set()
    srv.stop()


def _start_req(cid: str) -> Any:
    return PB.grpc.StartContainerRequest(container_id=cid)


@pytest.mark.parametrize("which", [0, 1], ids=["tcp", "unix"])
def test_calls_and_statuses(server: list[str], which: int) -> None:
    with AgentClient(server[which], pb=PB) as c:
        assert c.call("GetGuestDetails", PB.grpc.GuestDetailsRequest()).mem_block_size_bytes == 42
        c.call("StartContainer", _start_req("ok"))
        cases = {
            "denied": Code.PERMISSION_DENIED,
            "missing": Code.NOT_FOUND,
            "crash": Code.INTERNAL,
        }
        for cid, code in cases.items():
            with pytest.raises(RpcError) as exc:
                c.call("StartContainer", _start_req(cid))
            assert exc.value.code == code
        with pytest.raises(RpcError) as unimpl:
            c.call("ListRoutes", PB.grpc.ListRoutesRequest())
        assert (unimpl.value.code, unimpl.value.status_message) == (12, "method ListRoutes")
        with pytest.raises(RpcError) as nosvc:
            c.call_raw("grpc.HealthService", "Check", b"")
        assert (nosvc.value.code, nosvc.value.status_message) == (12, "service grpc.HealthService")
        with pytest.raises(RpcError) as slow:
            c.call("StartContainer", _start_req("slow"), timeout_s=0.2)
        assert slow.value.code == Code.DEADLINE_EXCEEDED


def test_calls_are_multiplexed_on_one_connection(server: list[str]) -> None:
    release.clear()
    with AgentClient(server[0], pb=PB) as c:
        blocked: list[Any] = []
        t = threading.Thread(
            target=lambda: blocked.append(c.call("StartContainer", _start_req("block")))
        )
        t.start()
        time.sleep(0.1)
        started = time.monotonic()
        for _ in range(20):
            c.call("GetGuestDetails", PB.grpc.GuestDetailsRequest())
        assert time.monotonic() - started < 5 and not blocked
        release.set()
        t.join(10)
        assert len(blocked) == 1


def _raw(addr: str) -> socket.socket:
    host, port = addr.removeprefix("tcp:").rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    return s


def _recv_frame(s: socket.socket) -> tuple[FrameHeader, Any]:
    decoder = FrameDecoder()
    while True:
        data = s.recv(65536)
        assert data, "connection closed"
        got = decoder.feed(data)
        if got:
            resp = PB.ttrpc.Response()
            resp.ParseFromString(got[0].payload)
            return got[0].header, resp


def test_wire_bytes_oversize_and_protocol_errors(server: list[str]) -> None:
    with _raw(server[0]) as s:
        req = PB.ttrpc.Request(
            service=AGENT_SERVICE,
            method="GetGuestDetails",
            payload=PB.grpc.GuestDetailsRequest().SerializeToString(),
        )
        s.sendall(encode_frame(1, TYPE_REQUEST, req.SerializeToString()))
        header, resp = _recv_frame(s)
        assert (header.stream_id, header.type, header.flags) == (1, TYPE_RESPONSE, 0)
        assert resp.status.code == 0 and resp.HasField("status")
        # a frame over the server's limit is skipped, answered RESOURCE_EXHAUSTED, and the
        # connection keeps working
        s.sendall(encode_frame(3, TYPE_REQUEST, b"\0" * (70 << 10), max_bytes=1 << 20))
        header, resp = _recv_frame(s)
        assert header.stream_id == 3 and resp.status.code == Code.RESOURCE_EXHAUSTED
        # a response over the limit is refused too
        big = PB.grpc.ReadStreamRequest(len=70 << 10).SerializeToString()
        req = PB.ttrpc.Request(service=AGENT_SERVICE, method="ReadStdout", payload=big)
        s.sendall(encode_frame(5, TYPE_REQUEST, req.SerializeToString()))
        assert _recv_frame(s)[1].status.code == Code.RESOURCE_EXHAUSTED
        # garbage envelope / garbage request message → INVALID_ARGUMENT
        s.sendall(encode_frame(7, TYPE_REQUEST, b"\xff\xff\xff"))
        assert _recv_frame(s)[1].status.code == Code.INVALID_ARGUMENT
        bad = PB.ttrpc.Request(service=AGENT_SERVICE, method="StartContainer", payload=b"\x0a\x09")
        s.sendall(encode_frame(9, TYPE_REQUEST, bad.SerializeToString()))
        assert _recv_frame(s)[1].status.code == Code.INVALID_ARGUMENT
        # a non-request frame is ignored; then an even (server-side) stream id closes it
        s.sendall(encode_frame(11, TYPE_RESPONSE, b""))
        s.sendall(encode_frame(12, TYPE_REQUEST, req.SerializeToString()))
        s.settimeout(5)
        assert s.recv(100) == b""
    with _raw(server[0]) as s:
        s.sendall(encode_frame(5, TYPE_REQUEST, b""))
        _recv_frame(s)
        s.sendall(encode_frame(3, TYPE_REQUEST, b""))  # stream ids must increase
        s.settimeout(5)
        assert s.recv(100) == b""


def test_inline_routes_run_on_the_event_loop_and_the_rest_on_workers(tmp_path: Path) -> None:
    """``Route.inline`` handlers are answered by the loop thread (no worker hop); errors still go
    through the one status table; ordinary routes run on the worker pool."""
    seen: dict[str, str] = {}

    def inline(req: Any) -> Any:
        seen["inline"] = threading.current_thread().name
        if req.mem_block_size:
            raise NotFoundError("no such thing")
        return PB.grpc.GuestDetailsResponse(mem_block_size_bytes=7)

    def pooled(req: Any) -> Any:
        seen["pooled"] = threading.current_thread().name
        return PB.empty.Empty()

    routes = {
        (AGENT_SERVICE, "GetGuestDetails"): Route(PB.grpc.GuestDetailsRequest, inline, True),
        (AGENT_SERVICE, "StartContainer"): Route(PB.grpc.StartContainerRequest, pooled),
    }
    srv = TtrpcServer(PB, routes)
    try:
        (addr,) = srv.start(f"unix:{tmp_path / 'a.sock'}")
        with AgentClient(addr, pb=PB) as c:
            got = c.call("GetGuestDetails", PB.grpc.GuestDetailsRequest())
            assert got.mem_block_size_bytes == 7
            with pytest.raises(RpcError) as exc:
                c.call("GetGuestDetails", PB.grpc.GuestDetailsRequest(mem_block_size=True))
            assert exc.value.code == Code.NOT_FOUND
            c.call("StartContainer", _start_req("ok"))
    finally:
        srv.stop()
    assert seen["inline"] == "ttrpc-server"
    assert seen["pooled"].startswith("ttrpc_")
