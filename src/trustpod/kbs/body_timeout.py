"""Stalled request bodies time out (``[trustpod] request_body_timeout_s``).

uvicorn bounds idle keep-alive connections but not a request whose body trickles in (or stops):
such a request would hold its handler, and its share of the body limit, forever. This ASGI
middleware gives the whole body a deadline counted from the start of the request; a handler
still waiting for body bytes then gets ``BodyTimeout`` (408 through ``http_errors``).
"""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trustpod.kbs.http_errors import BodyTimeout

__all__ = ["BodyTimeoutMiddleware"]


class BodyTimeoutMiddleware:
    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = float(timeout_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.timeout_s
        done = False

        async def timed_receive() -> Message:
            nonlocal done
            if done:  # body complete: later receives wait for a disconnect, untimed
                return await receive()
            remaining = deadline - anyio.current_time()
            try:
                with anyio.fail_after(max(remaining, 0.0)):
                    msg = await receive()
            except TimeoutError:
                raise BodyTimeout(
                    f"request body not received within {self.timeout_s:g} s"
                ) from None
            if msg["type"] != "http.request" or not msg.get("more_body", False):
                done = True
            return msg

        await self.app(scope, timed_receive, send)
