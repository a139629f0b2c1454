"""uvicorn's httptools protocol with a response written in one ``send()`` instead of two.

uvicorn writes the status line and headers of a response (``http.response.start``) and its
body as two ``transport.write`` calls; on an idle socket each is its own ``send()`` system call
(on loopback, the kernel also delivers each segment to the peer on the server's CPU). Here the
transport handed to the protocol keeps what is written during one event-loop step and passes it
on as one write at the next loop iteration (``call_soon``), or before ``close``. The bytes on the
wire are the same; only fewer, larger segments carry them (ADR 0304, second round).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol", "CoalescingTransport"]


class CoalescingTransport:
    """An ``asyncio.Transport`` view whose writes within one loop step become one write."""

    __slots__ = ("_buf", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buf: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._buf:
            self._loop.call_soon(self.flush)
        self._buf.append(bytes(data))

    def flush(self) -> None:
        if self._buf:
            data = b"".join(self._buf)
            self._buf.clear()
            if not self._transport.is_closing():  # (lost meanwhile: nowhere to write)
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, pause_reading ...
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` over a ``CoalescingTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        view: Any = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(view)
