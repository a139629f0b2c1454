"""The KBS ASGI app: an exact-path dispatch for the hot RCAR routes in front of Starlette.

``POST /kbs/v0/auth``, ``POST /kbs/v0/attest`` and ``GET /kbs/v0/resource/<path>`` are looked up
in a dict and called directly, through the same pure-ASGI request-id and body-timeout wrappers
every other route runs under; everything else (other methods, admin routes, ``/metrics``, odd
paths) goes to Starlette's router unchanged. The route handlers always return a ``Response``
(``KbsHttp.wrap`` maps every exception), so Starlette's routing and error middlewares add nothing
on these three routes but their cost (ADR 0304, second round: ~0.1 ms of CPU per full flow).

Equivalence with the Starlette route table, kept exactly: a path with a line break (which
Starlette's ``{path:path}`` regex does not match the same way), a scope with a ``root_path``
(mounted apps), and any other method fall back to Starlette.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from trustpod.kbs.body_timeout import BodyTimeoutMiddleware
from trustpod.kbs.logsetup import RequestIdMiddleware

__all__ = ["RESOURCE_PREFIX", "KbsAsgiApp"]

Handler = Callable[[Request], Awaitable[Response]]
RESOURCE_PREFIX = "/kbs/v0/resource/"
#: ASGI scope key: the hot handler chosen by ``KbsAsgiApp.__call__``.
_HANDLER = "trustpod.handler"


async def _run(scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive, send)
    response = await scope[_HANDLER](request)
    await response(scope, receive, send)


class KbsAsgiApp(Starlette):
    """Starlette with ``hot`` ``(method, path)`` routes (and GET under ``RESOURCE_PREFIX``)
    dispatched directly, wrapped by request-id and body-timeout exactly as the router is."""

    def __init__(
        self,
        routes: Sequence[BaseRoute],
        *,
        hot: Mapping[tuple[str, str], Handler],
        resource_get: Handler,
        body_timeout_s: float,
    ) -> None:
        super().__init__(routes=routes)
        self.add_middleware(BodyTimeoutMiddleware, timeout_s=body_timeout_s)
        self.add_middleware(RequestIdMiddleware)
        self._hot = dict(hot)
        self._resource_get = resource_get
        self._fast: ASGIApp = RequestIdMiddleware(BodyTimeoutMiddleware(_run, body_timeout_s))

    def _pick(self, scope: Scope) -> Handler | None:
        path: str = scope["path"]
        if scope.get("root_path") or "\n" in path:
            return None
        method: str = scope["method"]
        handler = self._hot.get((method, path))
        if handler is None and method == "GET" and path.startswith(RESOURCE_PREFIX):
            scope["path_params"] = {"path": path[len(RESOURCE_PREFIX) :]}
            handler = self._resource_get
        return handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._pick(scope) if scope["type"] == "http" else None
        if handler is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        scope[_HANDLER] = handler
        await self._fast(scope, receive, send)
