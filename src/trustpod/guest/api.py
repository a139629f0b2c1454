"""Local REST API for containers, compatible with upstream's api-server-rest (§3.2).

* ``GET /cdh/resource/<repo>/<type>/<tag>`` → the resource bytes (feature ``resource``).
* ``GET /aa/token?token_type=kbs`` → ``{"token","tee_keypair"}`` (feature ``attestation``).
* ``GET /aa/evidence?runtime_data=<text>`` → evidence JSON; the query value's UTF-8 bytes are
  the report data, as upstream (``runtime_data=xxxx`` → ``report_data`` ``eHh4eA==``).
* ``POST /cdh/unseal`` (trustpod extension, feature ``resource``): body = a ``sealed.`` string →
  the plaintext; ``trustpod secret unseal`` uses it.

Listen on 127.0.0.1 (upstream default ``127.0.0.1:8006``) or a unix socket; never on a public
address. Errors are ``text/plain`` with the error's reason code in ``X-Trustpod-Reason``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from trustpod.error_table import http_status
from trustpod.errors import TrustpodError
from trustpod.guest.aa import KBS_TOKEN_TYPE, AttestationAgent
from trustpod.guest.cdh import ConfidentialDataHub
from trustpod.sealed.resource_uri import ResourceUri

__all__ = ["FEATURES", "MAX_UNSEAL_BODY_BYTES", "create_app", "status_for"]

FEATURES = ("resource", "attestation")
#: Largest ``POST /cdh/unseal`` body.
MAX_UNSEAL_BODY_BYTES = 256 * 1024


def status_for(exc: TrustpodError) -> int:
    """HTTP status for an error raised while serving a container (the shared error table)."""
    return http_status(exc)


def _error(exc: TrustpodError) -> Response:
    return PlainTextResponse(
        exc.message, status_code=status_for(exc), headers={"X-Trustpod-Reason": exc.reason}
    )


async def _call(fn: Callable[[], bytes], media_type: str) -> Response:
    try:
        body = await run_in_threadpool(fn)
    except TrustpodError as exc:
        return _error(exc)
    return Response(body, media_type=media_type)


def _cdh_routes(cdh: ConfidentialDataHub) -> list[Route]:
    async def resource(request: Request) -> Response:
        p = request.path_params
        try:
            uri = ResourceUri.resource(p["repo"], p["type"], p["tag"])
        except TrustpodError as exc:
            return _error(exc)
        return await _call(lambda: cdh.get_resource(str(uri)), "application/octet-stream")

    async def unseal(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_UNSEAL_BODY_BYTES:
            return PlainTextResponse("sealed secret too large", status_code=413)
        text = body.decode("utf-8", errors="replace").strip()
        return await _call(lambda: cdh.unseal_secret(text), "application/octet-stream")

    return [
        Route("/cdh/resource/{repo}/{type}/{tag}", resource, methods=["GET"]),
        Route("/cdh/unseal", unseal, methods=["POST"]),
    ]


def _aa_routes(aa: AttestationAgent) -> list[Route]:
    async def token(request: Request) -> Response:
        kind = request.query_params.get("token_type", KBS_TOKEN_TYPE)
        return await _call(lambda: aa.get_token(kind), "application/json")

    async def evidence(request: Request) -> Response:
        data = request.query_params.get("runtime_data", "").encode("utf-8")
        return await _call(lambda: aa.get_evidence(data), "application/json")

    return [
        Route("/aa/token", token, methods=["GET"]),
        Route("/aa/evidence", evidence, methods=["GET"]),
    ]


def create_app(
    aa: AttestationAgent | None,
    cdh: ConfidentialDataHub | None,
    *,
    features: Sequence[str] = FEATURES,
) -> Starlette:
    """The Starlette app; routes exist only for the enabled features and present components."""
    routes: list[Route] = []
    if "resource" in features and cdh is not None:
        routes.extend(_cdh_routes(cdh))
    if "attestation" in features and aa is not None:
        routes.extend(_aa_routes(aa))
    return Starlette(routes=routes)
