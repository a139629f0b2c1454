"""Faithful fakes of two secret stores' HTTP APIs, for the tests (served by uvicorn on 127.0.0.1).

* HashiCorp Vault KV v2 (``/v1/<mount>/data|metadata/<path>``) and KV v1 (``/v1/<mount>/<path>``):
  ``X-Vault-Token`` checked (403 ``permission denied``), versions, check-and-set
  (``options.cas``; 400 "check-and-set parameter did not match the current version"), LIST (the
  ``LIST`` method and ``GET ?list=true``), 404 ``{"errors": []}`` for missing paths, ``sealed``
  switch answering 503 ``Vault is sealed`` as a sealed server does.
* Azure Key Vault secrets (api-version 7.x) with its challenge authentication: a request without
  a valid bearer gets 401 and ``WWW-Authenticate: Bearer authorization=..., resource=...``; the
  token comes from a fake Microsoft Entra ID (``/<tenant>/v2.0/.well-known/openid-configuration``,
  ``/<tenant>/oauth2/v2.0/token``, client-credentials grant with the configured secret). Soft
  delete: a deleted name stays reserved (409 on set) until purged.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.parse
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["FakeAzureKeyVault", "FakeVault"]


def _errors(status: int, *msgs: str) -> JSONResponse:
    return JSONResponse({"errors": list(msgs)}, status_code=status)


class FakeVault:
    def __init__(self, token: str, mount: str = "secret", kv_version: int = 2) -> None:
        self.token = token
        self.mount = mount
        self.kv_version = kv_version
        self.sealed = False
        # path -> list of versions (dict data or None when destroyed)
        self.data: dict[str, list[dict[str, Any]]] = {}
        self.requests = 0
        self.app = Starlette(
            routes=[
                Route(
                    "/v1/{rest:path}",
                    self.handle,
                    methods=["GET", "POST", "PUT", "DELETE", "LIST"],
                )
            ]
        )

    def _list(self, prefix: str) -> Response:
        prefix = prefix.strip("/")
        prefix = prefix + "/" if prefix else ""
        names: set[str] = set()
        for path in self.data:
            if path.startswith(prefix) and self.data[path]:
                rest = path[len(prefix) :]
                head, sep, _ = rest.partition("/")
                names.add(head + sep)
        if not names:
            return _errors(404)
        return JSONResponse({"data": {"keys": sorted(names)}})

    async def handle(self, request: Request) -> Response:
        self.requests += 1
        if self.sealed:
            return _errors(503, "Vault is sealed")
        if request.headers.get("x-vault-token") != self.token:
            return _errors(403, "permission denied")
        rest = request.path_params["rest"]
        method = request.method
        if method == "GET" and request.query_params.get("list") == "true":
            method = "LIST"
        mount, _, sub = rest.partition("/")
        if mount != self.mount:
            return _errors(404, f"no handler for route '{rest}'")
        if self.kv_version == 1:
            return await self._v1(method, sub, request)
        kind, _, path = sub.partition("/")
        if kind == "data" and method == "GET":
            versions = self.data.get(path)
            if not versions:
                return _errors(404)
            current = versions[-1]
            meta = {"version": len(versions), "deletion_time": "", "destroyed": False}
            return JSONResponse({"data": {"data": current, "metadata": meta}})
        if kind == "data" and method in ("POST", "PUT"):
            body = json.loads(await request.body())
            cas = (body.get("options") or {}).get("cas")
            versions = self.data.setdefault(path, [])
            if cas is not None and int(cas) != len(versions):
                if not versions:
                    del self.data[path]
                return _errors(400, "check-and-set parameter did not match the current version")
            versions.append(dict(body["data"]))
            return JSONResponse({"data": {"version": len(versions), "destroyed": False}})
        if kind == "metadata" and method == "DELETE":
            self.data.pop(path, None)
            return Response(status_code=204)
        if kind == "metadata" and method == "LIST":
            return self._list(path)
        return _errors(405, f"unsupported {method} {rest}")

    async def _v1(self, method: str, path: str, request: Request) -> Response:
        if method == "GET":
            versions = self.data.get(path)
            if not versions:
                return _errors(404)
            return JSONResponse({"data": versions[-1], "lease_duration": 2764800})
        if method in ("POST", "PUT"):
            self.data[path] = [dict(json.loads(await request.body()))]
            return Response(status_code=204)
        if method == "DELETE":
            self.data.pop(path, None)
            return Response(status_code=204)
        if method == "LIST":
            return self._list(path)
        return _errors(405, f"unsupported {method}")


class FakeAzureKeyVault:
    """One vault plus the Entra ID endpoints, on the same HTTPS origin (``base``, set once the
    server is up: the challenge names it as both authority and resource)."""

    def __init__(self, tenant: str, client_id: str, client_secret: str) -> None:
        self.tenant = tenant
        self.client_id = client_id
        self.client_secret = client_secret
        self.base = ""
        self.resource = ""  # the challenge's resource (default: base)
        self.tokens: set[str] = set()
        self.secrets: dict[str, dict[str, Any]] = {}
        self.deleted: dict[str, dict[str, Any]] = {}
        self.fail_with: int | None = None
        self.app = Starlette(
            routes=[
                Route(
                    "/{tenant}/v2.0/.well-known/openid-configuration", self.openid, methods=["GET"]
                ),
                Route("/{tenant}/oauth2/v2.0/token", self.token, methods=["POST"]),
                Route("/secrets", self.list_secrets, methods=["GET"]),
                Route("/secrets/{name}", self.secret, methods=["GET", "PUT", "DELETE"]),
                Route("/secrets/{name}/{version}", self.secret, methods=["GET"]),
                Route("/deletedsecrets/{name}", self.deleted_secret, methods=["GET", "DELETE"]),
            ]
        )

    # -- Entra ID ---------------------------------------------------------------------------
    async def openid(self, request: Request) -> Response:
        t = request.path_params["tenant"]
        root = f"{self.base}/{t}"
        return JSONResponse(
            {
                "token_endpoint": f"{root}/oauth2/v2.0/token",
                "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
                "issuer": f"{root}/v2.0",
                "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
            }
        )

    async def token(self, request: Request) -> Response:
        form = dict(urllib.parse.parse_qsl((await request.body()).decode()))
        if (
            request.path_params["tenant"] != self.tenant
            or form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
            or form.get("grant_type") != "client_credentials"
        ):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "AADSTS7000215: bad secret"},
                status_code=401,
            )
        tok = secrets.token_urlsafe(24)
        self.tokens.add(tok)
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": tok,
            }
        )

    # -- Key Vault --------------------------------------------------------------------------
    def _auth(self, request: Request) -> Response | None:
        if self.fail_with is not None:
            return JSONResponse(
                {"error": {"code": "ServiceUnavailable", "message": "injected failure"}},
                status_code=self.fail_with,
            )
        h = request.headers.get("authorization", "")
        if h.startswith("Bearer ") and h[7:] in self.tokens:
            return None
        resource = self.resource or self.base
        challenge = f'Bearer authorization="{self.base}/{self.tenant}", resource="{resource}"'
        return JSONResponse(
            {
                "error": {
                    "code": "Unauthorized",
                    "message": "AKV10000: Request is missing a Bearer or PoP token.",
                }
            },
            status_code=401,
            headers={"WWW-Authenticate": challenge},
        )

    def _bundle(self, name: str) -> dict[str, Any]:
        s = self.secrets[name]
        out = {
            "value": s["value"],
            "id": f"{self.base}/secrets/{name}/{s['version']}",
            "attributes": {
                "enabled": True,
                "created": s["created"],
                "updated": s["created"],
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": s.get("tags") or {},
        }
        if s.get("contentType"):
            out["contentType"] = s["contentType"]
        return out

    async def secret(self, request: Request) -> Response:
        denied = self._auth(request)
        if denied is not None:
            return denied
        name = request.path_params["name"].lower()  # names are case-insensitive
        if request.method == "PUT":
            if name in self.deleted:
                return JSONResponse(
                    {
                        "error": {
                            "code": "Conflict",
                            "message": f"Secret {name} is currently in a "
                            "deleted but recoverable state",
                        }
                    },
                    status_code=409,
                )
            body = json.loads(await request.body())
            self.secrets[name] = {
                "value": body["value"],
                "contentType": body.get("contentType"),
                "tags": body.get("tags"),
                "version": secrets.token_hex(16),
                "created": int(time.time()),
            }
            return JSONResponse(self._bundle(name))
        if name not in self.secrets:
            return JSONResponse(
                {
                    "error": {
                        "code": "SecretNotFound",
                        "message": f"A secret with (name/id) {name} was not found in this "
                        "key vault.",
                    }
                },
                status_code=404,
            )
        if request.method == "DELETE":
            bundle = self._bundle(name)
            bundle.update(
                recoveryId=f"{self.base}/deletedsecrets/{name}",
                deletedDate=int(time.time()),
                scheduledPurgeDate=int(time.time()) + 90 * 86400,
            )
            self.deleted[name] = bundle
            del self.secrets[name]
            return JSONResponse(bundle)
        return JSONResponse(self._bundle(name))

    async def deleted_secret(self, request: Request) -> Response:
        denied = self._auth(request)
        if denied is not None:
            return denied
        name = request.path_params["name"].lower()
        if name not in self.deleted:
            return JSONResponse(
                {"error": {"code": "SecretNotFound", "message": "Deleted Secret not found"}},
                status_code=404,
            )
        if request.method == "DELETE":
            del self.deleted[name]
            return Response(status_code=204)
        return JSONResponse(self.deleted[name])

    async def list_secrets(self, request: Request) -> Response:
        denied = self._auth(request)
        if denied is not None:
            return denied
        items = []
        for name in sorted(self.secrets):
            b = self._bundle(name)
            del b["value"]
            b["id"] = f"{self.base}/secrets/{name}"
            items.append(b)
        return JSONResponse({"value": items, "nextLink": None})
