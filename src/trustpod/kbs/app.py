"""The KBS HTTP application (Starlette): routes of reference §1.1, metrics, errors, audit.

Transport only: bodies are read with the size limit enforced while streaming, JSON is parsed once,
every ``TrustpodError`` goes through ``http_errors.error_reply`` (and denials into the audit log),
and anything else is logged and answered 500 with the error body (never a hang).
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trustpod._internal.json_limits import loads as limited_loads
from trustpod.errors import AuthenticationError, EvidenceError, NotFoundError, TrustpodError
from trustpod.kbs.admin_auth import AdminAuthorizer
from trustpod.kbs.core import KbsCore, parse_resource_path
from trustpod.kbs.dispatch import KbsAsgiApp
from trustpod.kbs.http_errors import (
    ERROR_TYPE_PREFIX,
    BodyTooLarge,
    Denial,
    MalformedBody,
    error_reply,
)
from trustpod.kbs.logsetup import current_request_id
from trustpod.protocol import SESSION_COOKIE

__all__ = ["create_app"]

_log = logging.getLogger("trustpod.kbs")
_JSON = "application/json"
Handler = Callable[[Request], Awaitable[Response]]
SESSION_PURGE_S = 60.0
ATTEST_THREADS = 4
#: ASGI scope key: request body bytes received so far (the request-size histogram).
_BODY_BYTES = "trustpod.body_bytes"


@functools.cache
def _attest_pool() -> ThreadPoolExecutor:
    """The process's attestation threads. Verification is CPU-bound: a few threads, not anyio's
    default 40; a plain executor hands over at about half the CPU cost of anyio's ``to_thread``
    (ADR 0304, second round)."""
    return ThreadPoolExecutor(ATTEST_THREADS, thread_name_prefix="kbs-attest")


class KbsHttp:
    """Route handlers bound to one ``KbsCore``."""

    def __init__(self, core: KbsCore, admin: AdminAuthorizer) -> None:
        self.core = core
        self.admin = admin
        self.limit = core.config.http_server.max_body_bytes
        self.upstream_codes = core.config.trustpod.upstream_status_codes
        self.max_json_depth = core.config.trustpod.max_json_depth
        self._last_purge = time.monotonic()
        self._attest_pool = _attest_pool()

    async def maybe_purge(self) -> None:
        """Delete expired sessions every ``SESSION_PURGE_S`` (upstream: a 60 s background task)."""
        now = time.monotonic()
        if now - self._last_purge < SESSION_PURGE_S:
            return
        self._last_purge = now
        try:
            removed = await run_in_threadpool(self.core.sessions.purge_expired)
            if removed:
                _log.debug("purged %d expired sessions", removed)
        except TrustpodError:
            _log.warning("session purge failed", exc_info=True)

    # -- helpers -------------------------------------------------------------------------------
    async def body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            raise BodyTooLarge(f"payload reached size limit ({self.limit} bytes)")
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            request.scope[_BODY_BYTES] = total  # for kbs_http_request_size_bytes
            if total > self.limit:
                raise BodyTooLarge(f"payload reached size limit ({self.limit} bytes)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def json(self, request: Request) -> Any:
        raw = await self.body(request)
        try:
            return limited_loads(raw, max_depth=self.max_json_depth, what="request body")
        except EvidenceError as exc:  # deeper than [trustpod] max_json_depth
            raise MalformedBody(exc.message, reason="kbs.json_depth", fix=exc.fix) from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedBody("request body is not valid JSON") from exc

    def error(self, request: Request, exc: TrustpodError, variant: str) -> Response:
        reply = error_reply(
            exc,
            default_variant=variant,
            upstream_status_codes=self.upstream_codes,
            request_id=current_request_id(),
        )
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.url.path,
            "status": reply.status,
            "variant": reply.variant,
            "reason": exc.reason,
            "message": exc.message,
        }
        if isinstance(exc, Denial):
            entry["explain"] = exc.explain
        self.core.audit.record(reply.request_id, entry)
        return Response(reply.body(), reply.status, headers=reply.headers())

    def check_admin(self, request: Request) -> None:
        uri = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        self.admin.check(request.headers.get("authorization"), uri)

    def wrap(self, fn: Handler, variant: str) -> Handler:
        """``fn`` with the error mapping and the request metrics of §7 (in the handler, not an
        ASGI middleware: one coroutine layer and two closures less per request)."""
        m = self.core.metrics

        async def handler(request: Request) -> Response:
            start = time.perf_counter()
            m.http_requests.inc()
            m.active.inc()
            try:
                response = await self._reply(fn, request, variant)
            finally:
                m.active.dec()
            m.http_duration.observe(time.perf_counter() - start)
            m.http_request_size.observe(request.scope.get(_BODY_BYTES, 0))
            m.http_response_size.observe(len(response.body))
            return response

        return handler

    async def _reply(self, fn: Handler, request: Request, variant: str) -> Response:
        try:
            return await fn(request)
        except TrustpodError as exc:
            return self.error(request, exc, variant)
        except Exception:
            _log.exception("internal error on %s %s", request.method, request.url.path)
            body = json.dumps({"type": _type("HTTPFailed"), "detail": "internal error"})
            return Response(body, 500, media_type=_JSON)

    def _cookie(self, sid: str, expires_at: float) -> str:
        return f"{SESSION_COOKIE}={sid}; Expires={_http_date(expires_at)}"

    # -- RCAR ------------------------------------------------------------------------------------
    async def auth(self, request: Request) -> Response:
        m = self.core.metrics
        m.auth_requests.inc()
        try:
            challenge, session = self.core.auth(await self.json(request))
        except TrustpodError:
            m.auth_errors.inc()
            raise
        m.auth_successes.inc()
        await self.maybe_purge()
        headers = {"set-cookie": self._cookie(session.id, session.expires.timestamp())}
        return Response(json.dumps(challenge), 200, headers=headers, media_type=_JSON)

    async def attest(self, request: Request) -> Response:
        m = self.core.metrics
        m.attestation_requests.inc()
        sid = request.cookies.get(SESSION_COOKIE)
        try:
            body = await self.json(request)
            context = contextvars.copy_context()  # the request id goes with it
            token, session = await asyncio.get_running_loop().run_in_executor(
                self._attest_pool, context.run, self.core.attest, sid, body
            )
        except (AuthenticationError, EvidenceError) as exc:
            # malformed requests and missing/expired sessions (upstream's errors counter);
            # verification failures are counted per TEE by the core
            if isinstance(exc, AuthenticationError) or exc.reason.startswith("kbs."):
                m.attestation_errors.inc()
            raise
        headers = {"set-cookie": self._cookie(session.id, session.expires.timestamp())}
        return Response(json.dumps({"token": token}), 200, headers=headers, media_type=_JSON)

    # -- resource plugin ---------------------------------------------------------------------------
    async def resource(self, request: Request) -> Response:
        path = request.path_params["path"]
        parse_resource_path(path)  # (1) 404 InvalidRequestPath before anything else
        if request.method in ("GET", "HEAD"):  # Starlette adds HEAD to GET routes: a read
            token = self.core.token_from(
                request.cookies.get(SESSION_COOKIE), request.headers.get("authorization")
            )
            query = dict(request.query_params) if request.scope.get("query_string") else {}
            return Response(self.core.get_resource(token, path, query), 200, media_type=_JSON)
        self.check_admin(request)
        if request.method == "POST":
            self.core.set_resource(path, await self.body(request))
        elif request.method == "DELETE":
            self.core.delete_resource(path)
        else:  # never reached through the routes; fail closed rather than delete
            raise EvidenceError(
                f"method {request.method} not allowed on a resource", reason="kbs.method"
            )
        return Response(b"", 200, media_type="text/xml")  # upstream's content type quirk

    # -- admin -------------------------------------------------------------------------------------
    async def attestation_policy(self, request: Request) -> Response:
        self.check_admin(request)
        body = await self.json(request)
        await run_in_threadpool(self.core.set_attestation_policy, body)
        return Response(b"", 200)

    async def resource_policy(self, request: Request) -> Response:
        self.check_admin(request)
        if request.method == "GET":
            return Response(json.dumps(self.core.policy.policy_ids()), 200, media_type=_JSON)
        self.core.set_resource_policy(await self.json(request))
        return Response(b"", 200)

    async def reference_value_set(self, request: Request) -> Response:
        self.check_admin(request)
        self.core.register_reference_value(await self.json(request))
        return Response(b"", 200)

    async def reference_value_get(self, request: Request) -> Response:
        self.check_admin(request)
        value = self.core.get_reference_value(request.path_params["id"])
        return Response(json.dumps(value), 200, media_type=_JSON)

    async def explain(self, request: Request) -> Response:
        self.check_admin(request)
        doc = self.core.audit.explain(request.path_params["rid"])
        return Response(json.dumps(doc, indent=2), 200, media_type=_JSON)

    async def not_found(self, request: Request) -> Response:
        plugin = request.path_params["rest"].split("/", 1)[0]
        raise NotFoundError(f"plugin {plugin[:64]!r} not found", reason="kbs.plugin_not_found")

    async def metrics(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(self.core.metrics.render(), 200, media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        return Response(b"", 200)


@functools.lru_cache(maxsize=16)
def _http_date(timestamp: float) -> str:
    """RFC 7231 date of a session expiry (whole seconds: one format per second, not per reply)."""
    return email.utils.formatdate(timestamp, usegmt=True)


def _type(variant: str) -> str:
    return ERROR_TYPE_PREFIX + variant


def create_app(core: KbsCore, admin: AdminAuthorizer) -> KbsAsgiApp:
    """The ASGI app for ``core``; one ``KbsMetrics`` registry per app."""
    h = KbsHttp(core, admin)
    w = h.wrap
    auth = w(h.auth, "AttestationError")
    attest = w(h.attest, "AttestationError")
    resource = w(h.resource, "PluginInternalError")
    routes = [
        Route("/kbs/v0/auth", auth, methods=["POST"]),
        Route("/kbs/v0/attest", attest, methods=["POST"]),
        Route("/kbs/v0/resource/{path:path}", resource, methods=["GET", "POST", "DELETE"]),
        Route(
            "/kbs/v0/attestation-policy",
            w(h.attestation_policy, "AdminAuthAccess"),
            methods=["POST"],
        ),
        Route(
            "/kbs/v0/resource-policy",
            w(h.resource_policy, "AdminAuthAccess"),
            methods=["GET", "POST"],
        ),
        Route("/kbs/v0/reference-value", w(h.reference_value_set, "RvpsError"), methods=["POST"]),
        Route(
            "/kbs/v0/reference-value/{id:path}",
            w(h.reference_value_get, "RvpsError"),
            methods=["GET"],
        ),
        Route("/kbs/v0/trustpod/explain/{rid}", w(h.explain, "AdminAuthAccess"), methods=["GET"]),
        Route(
            "/kbs/v0/{rest:path}",
            w(h.not_found, "PluginNotFound"),
            methods=["GET", "POST", "PUT", "DELETE"],
        ),
        Route("/metrics", h.metrics, methods=["GET"]),
        Route("/healthz", h.healthz, methods=["GET"]),
    ]
    # the three RCAR routes by exact path, the rest through the router (trustpod.kbs.dispatch)
    return KbsAsgiApp(
        routes,
        hot={
            ("POST", "/kbs/v0/auth"): auth,
            ("POST", "/kbs/v0/attest"): attest,
        },
        resource_get=resource,
        body_timeout_s=core.config.trustpod.request_body_timeout_s,
    )
