"""A fake Azure Resource Manager on 127.0.0.1 over HTTPS (trustme), for the real Azure SDK.

Serves what CAA's Azure provider calls: VM sizes, VM PUT (an ARM long-running operation with
``Azure-AsyncOperation``), VM GET/DELETE, NIC GET. Records every request (method, path, JSON
body, headers). Faults are queued per VM PUT: ``"429"`` (Retry-After: 1, then normal), ``"409"``
(Conflict), ``"quota"`` (OperationNotAllowed, quota exceeded), ``"never"`` (the operation stays
InProgress). A ``boot(name, userdata, ip)`` callback "boots" each created VM, ``stop(name)``
runs at delete; each VM gets its own loopback IP (127.0.0.N) as its NIC's private address.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trustme

_VM = re.compile(
    r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft.Compute/"
    r"virtualMachines/([^/?]+)$"
)
_NIC = re.compile(
    r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft.Network/"
    r"networkInterfaces/([^/?]+)$"
)
_SIZES = re.compile(
    r"^/subscriptions/([^/]+)/providers/Microsoft.Compute/locations/([^/]+)/vmSizes$"
)
SIZES = [
    {"name": "Standard_DC2as_v5", "numberOfCores": 2, "memoryInMB": 8192},
    {"name": "Standard_DC4as_v5", "numberOfCores": 4, "memoryInMB": 16384},
    {"name": "Standard_DC8as_v5", "numberOfCores": 8, "memoryInMB": 32768},
]


@dataclass
class FakeArm:
    url: str = ""
    ca: trustme.CA = field(default_factory=trustme.CA)
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    nics: dict[str, dict[str, Any]] = field(default_factory=dict)
    disks: dict[str, str] = field(default_factory=dict)
    ops: dict[str, str] = field(default_factory=dict)
    boot: Callable[[str, bytes, str], None] | None = None
    stop: Callable[[str], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    tokens: int = 0
    _next_ip: int = 2

    def puts(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "PUT"]


def _handler(arm: FakeArm) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(
            self, status: int, body: Any = None, headers: dict[str, str] | None = None
        ) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> tuple[str, Any]:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")  # the token endpoint's form body
            path = self.path.partition("?")[0]
            with arm.lock:
                arm.requests.append(
                    {
                        "method": self.command,
                        "path": path,
                        "query": self.path.partition("?")[2],
                        "body": body,
                        "auth": self.headers.get("Authorization", ""),
                    }
                )
            return path, body

        def _auth_ok(self) -> bool:
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                self._send(401, {"error": {"code": "AuthenticationFailed", "message": "no token"}})
                return False
            return True

        def do_POST(self) -> None:
            path, _ = self._record()
            if path.endswith("/oauth2/v2.0/token"):  # Entra ID client-credentials grant
                arm.tokens += 1
                token = {"token_type": "Bearer", "expires_in": 3600, "access_token": "fake-token"}
                self._send(200, token)
            else:
                self._send(404, {"error": {"code": "NotFound", "message": path}})

        def do_GET(self) -> None:
            path, _ = self._record()
            if path.endswith("/v2.0/.well-known/openid-configuration"):
                tenant = path.strip("/").split("/")[0]
                base = f"{arm.url}/{tenant}"
                self._send(
                    200,
                    {
                        "token_endpoint": f"{base}/oauth2/v2.0/token",
                        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "issuer": f"{base}/v2.0",
                        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    },
                )
                return
            if not self._auth_ok():
                return
            if m := _SIZES.match(path):
                self._send(200, {"value": SIZES})
            elif path.startswith("/operations/"):
                state = arm.ops.get(path.rpartition("/")[2], "InProgress")
                self._send(200, {"status": state})
            elif m := _VM.match(path):
                vm = arm.vms.get(m.group(3))
                if vm is None:
                    self._send(404, {"error": {"code": "ResourceNotFound", "message": "no VM"}})
                else:
                    self._send(200, vm)
            elif m := _NIC.match(path):
                nic = arm.nics.get(m.group(3))
                if nic is None:
                    self._send(404, {"error": {"code": "NotFound", "message": "no NIC"}})
                else:
                    self._send(200, nic)
            else:
                self._send(404, {"error": {"code": "NotFound", "message": path}})

        def do_PUT(self) -> None:
            path, body = self._record()
            if not self._auth_ok():
                return
            m = _VM.match(path)
            if m is None:
                self._send(404, {"error": {"code": "NotFound", "message": path}})
                return
            sub, rg, name = m.groups()
            with arm.lock:
                fault = arm.faults.pop(0) if arm.faults else ""
            if fault == "429":
                self._send(
                    429,
                    {"error": {"code": "TooManyRequests", "message": "slow down"}},
                    {"Retry-After": "1"},
                )
                return
            if fault == "409":
                self._send(409, {"error": {"code": "Conflict", "message": f"{name} is busy"}})
                return
            if fault == "quota":
                self._send(
                    409,
                    {
                        "error": {
                            "code": "OperationNotAllowed",
                            "message": (
                                "Operation could not be completed as it results in "
                                "exceeding approved standardDCASv5Family Cores quota."
                            ),
                        }
                    },
                )
                return
            base = f"/subscriptions/{sub}/resourceGroups/{rg}/providers"
            with arm.lock:
                ip = f"127.0.0.{arm._next_ip}"
                arm._next_ip += 1
            nic_name = f"{name}-net"
            arm.nics[nic_name] = {
                "id": f"{base}/Microsoft.Network/networkInterfaces/{nic_name}",
                "name": nic_name,
                "properties": {
                    "ipConfigurations": [
                        {"name": "ip-config", "properties": {"privateIPAddress": ip}}
                    ]
                },
            }
            arm.disks[f"{name}-disk"] = name
            vm = {
                "id": path,
                "name": name,
                "location": body["location"],
                "tags": body.get("tags", {}),
                "properties": {
                    **body["properties"],
                    "provisioningState": "Creating",
                    "networkProfile": {
                        **body["properties"]["networkProfile"],
                        "networkInterfaces": [{"id": arm.nics[nic_name]["id"]}],
                    },
                },
            }
            vm["properties"].pop("userData", None)  # ARM never returns userData on GET
            arm.vms[name] = vm
            op = f"op-{name}"
            arm.ops[op] = "InProgress"
            self._send(201, vm, {"Azure-AsyncOperation": f"{arm.url}/operations/{op}"})
            if fault == "never":
                return
            if arm.boot is not None:
                arm.boot(name, base64.b64decode(body["properties"]["userData"]), ip)
            vm["properties"]["provisioningState"] = "Succeeded"
            arm.ops[op] = "Succeeded"

        def do_DELETE(self) -> None:
            path, _ = self._record()
            if not self._auth_ok():
                return
            m = _VM.match(path)
            if m is None or m.group(3) not in arm.vms:
                self._send(204)
                return
            name = m.group(3)
            if arm.stop is not None:
                arm.stop(name)
            props = arm.vms.pop(name)["properties"]
            for cfg in props["networkProfile"]["networkInterfaceConfigurations"]:
                if cfg["properties"].get("deleteOption") == "Delete":
                    arm.nics.pop(cfg["name"], None)
            if props["storageProfile"]["osDisk"].get("deleteOption") == "Delete":
                arm.disks.pop(props["storageProfile"]["osDisk"]["name"], None)
            self._send(200)

    return Handler


@contextmanager
def fake_arm() -> Iterator[FakeArm]:
    arm = FakeArm()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(arm))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    arm.ca.issue_cert("127.0.0.1").configure_cert(ctx)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    arm.url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield arm
    finally:
        server.shutdown()
        server.server_close()


class FakeCredential:
    """azure-core's TokenCredential: a static bearer token (the fake ARM only checks presence)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken("fake-token", 2**31)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo("fake-token", 2**31)
