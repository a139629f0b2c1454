"""ttRPC's wire framing (containerd/ttrpc ``channel.go``, kata's ttrpc-rust ``MessageHeader``).

Every message on a ttRPC connection is a 10-byte header followed by ``length`` payload bytes::

    offset 0  u32 big-endian  length     payload bytes that follow (≤ MAX_MESSAGE_BYTES)
    offset 4  u32 big-endian  stream_id  odd for client-initiated streams, one per call
    offset 8  u8              type       1 request, 2 response, 3 data (streaming)
    offset 9  u8              flags      streaming flags (remote-closed 1, remote-open 2, no-data 4)

The payload of a request is a protobuf ``ttrpc.Request``, of a response a ``ttrpc.Response``.
A frame longer than the limit is not buffered: its payload is skipped and the stream answered
with RESOURCE_EXHAUSTED, as the Go implementation does. Pure: bytes in, frames out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from trustpod.errors import EvidenceError

__all__ = [
    "FLAG_NO_DATA",
    "FLAG_REMOTE_CLOSED",
    "FLAG_REMOTE_OPEN",
    "HEADER_LEN",
    "MAX_MESSAGE_BYTES",
    "TYPE_DATA",
    "TYPE_REQUEST",
    "TYPE_RESPONSE",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameHeader",
    "encode_frame",
]

#: Header size in bytes (ttrpc ``messageHeaderLength``).
HEADER_LEN = 10
#: Largest payload accepted or sent (ttrpc ``messageLengthMax``, 4 MiB).
MAX_MESSAGE_BYTES = 4 << 20
TYPE_REQUEST = 1
TYPE_RESPONSE = 2
TYPE_DATA = 3
FLAG_REMOTE_CLOSED = 0x1
FLAG_REMOTE_OPEN = 0x2
FLAG_NO_DATA = 0x4

_HEADER = struct.Struct(">IIBB")


class FrameError(EvidenceError):
    """A frame that cannot be sent or parsed (wrong header size, payload over the limit)."""

    default_reason = "ttrpc.frame"


@dataclass(frozen=True, slots=True)
class FrameHeader:
    length: int
    stream_id: int
    type: int
    flags: int

    @classmethod
    def parse(cls, data: bytes) -> FrameHeader:
        if len(data) != HEADER_LEN:
            raise FrameError(f"ttRPC header is {len(data)} bytes, expected {HEADER_LEN}")
        length, stream_id, type_, flags = _HEADER.unpack(data)
        return cls(length, stream_id, type_, flags)

    def encode(self) -> bytes:
        return _HEADER.pack(self.length, self.stream_id, self.type, self.flags)


@dataclass(frozen=True, slots=True)
class Frame:
    """One received frame. ``oversized`` frames carry no payload: it was skipped."""

    header: FrameHeader
    payload: bytes
    oversized: bool = False


def encode_frame(
    stream_id: int,
    type_: int,
    payload: bytes,
    *,
    flags: int = 0,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> bytes:
    """Header + payload; refuses payloads over ``max_bytes`` (ttrpc refuses to send them)."""
    if len(payload) > max_bytes:
        raise FrameError(
            f"ttRPC message of {len(payload)} bytes exceeds the maximum of {max_bytes}",
            reason="ttrpc.too_large",
        )
    if not 0 <= stream_id <= 0xFFFFFFFF or not 0 <= type_ <= 0xFF or not 0 <= flags <= 0xFF:
        raise FrameError("ttRPC header field out of range")
    return FrameHeader(len(payload), stream_id, type_, flags).encode() + payload


class FrameDecoder:
    """Incremental parser: ``feed`` any chunks of the byte stream, get complete frames back.

    Memory is bounded by ``max_bytes`` + one header: an oversized frame's payload is counted
    and dropped as it arrives, then reported once as ``Frame(..., oversized=True)``."""

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._header: FrameHeader | None = None
        self._skip = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        out: list[Frame] = []
        self._buf += data
        while True:
            if self._header is None:
                if len(self._buf) < HEADER_LEN:
                    return out
                self._header = FrameHeader.parse(bytes(self._buf[:HEADER_LEN]))
                del self._buf[:HEADER_LEN]
                self._skip = self._header.length if self._header.length > self.max_bytes else 0
            header = self._header
            if self._skip:
                dropped = min(self._skip, len(self._buf))
                del self._buf[:dropped]
                self._skip -= dropped
                if self._skip:
                    return out
                out.append(Frame(header, b"", oversized=True))
                self._header = None
                continue
            if len(self._buf) < header.length:
                return out
            payload = bytes(self._buf[: header.length])
            del self._buf[: header.length]
            out.append(Frame(header, payload))
            self._header = None
