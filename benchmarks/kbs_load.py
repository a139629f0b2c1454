"""A small asyncio HTTP/1.1 load generator for the KBS (keep-alive, no client library overhead).

Each virtual client loops ``auth -> attest -> get-resource`` (sample TEE: runtime-data digest over
JCS, evidence ``{"svn","report_data"}``), recording each flow's latency. The client does not
decrypt the JWE (that is guest-side cost, measured in JWE figures).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import rfc8785

__all__ = [
    "TEE_PUBKEY",
    "Conn",
    "Evidence",
    "FlowStats",
    "attest_token",
    "one_flow",
    "provision",
    "run_flows",
    "sample_evidence",
]


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader = reader
        self.writer = writer
        self.host = host

    @classmethod
    async def open(cls, url: str, ctx: ssl.SSLContext | None) -> Conn:
        u = urlsplit(url)
        reader, writer = await asyncio.open_connection(
            u.hostname, u.port, ssl=ctx if u.scheme == "https" else None
        )
        return cls(reader, writer, f"{u.hostname}:{u.port}")

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body or method == "POST":
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *hdr_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        hdrs: dict[str, str] = {}
        for line in hdr_lines:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        data = await self.reader.readexactly(n) if n else b""
        return status, hdrs, data

    def close(self) -> None:
        self.writer.close()


@dataclass
class FlowStats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""


TEE_PUBKEY = {
    "kty": "EC",
    "crv": "P-256",
    "alg": "ECDH-ES+A256KW",
    "x": "WKn-ZIGevcwGIyyrzFoZNBdaq9_TsqzGl96oc0CWuis",
    "y": "y77t-RvAHRKTsSGdIYUfweuOvwrvDD-Q3Hv5J0fSKbE",
}
#: Evidence for one flow from (nonce, sha384 of the runtime data) -> the TEE's primary evidence.
Evidence = Callable[[str, bytes], Any]


def sample_evidence(nonce: str, digest: bytes) -> Any:
    """The sample TEE's evidence binding ``digest``."""
    return {"svn": "1", "report_data": base64.b64encode(digest).decode()}


async def attest_token(
    conn: Conn, tee: str = "sample", evidence: Evidence = sample_evidence
) -> str:
    """auth -> attest over ``conn`` (RCAR, KBS protocol 0.4.0); the attestation token."""
    auth = json.dumps({"version": "0.4.0", "tee": tee, "extra-params": ""}).encode()
    status, hdrs, data = await conn.request("POST", "/kbs/v0/auth", auth)
    if status != 200:
        raise RuntimeError(f"auth {status} {data[:200]!r}")
    cookie = hdrs["set-cookie"].split(";", 1)[0]
    nonce = json.loads(data)["nonce"]
    runtime = {"additional-evidence": "", "nonce": nonce, "tee-pubkey": TEE_PUBKEY}
    digest = hashlib.sha384(rfc8785.dumps(runtime)).digest()
    body = json.dumps(
        {
            "runtime-data": {"nonce": nonce, "tee-pubkey": TEE_PUBKEY},
            "tee-evidence": {
                "primary_evidence": evidence(nonce, digest),
                "additional_evidence": "",
            },
        }
    ).encode()
    status, _, data = await conn.request("POST", "/kbs/v0/attest", body, {"Cookie": cookie})
    if status != 200:
        raise RuntimeError(f"attest {status} {data[:300]!r}")
    return str(json.loads(data)["token"])


async def one_flow(
    conn: Conn, resource: str, tee: str = "sample", evidence: Evidence = sample_evidence
) -> None:
    """One full flow: auth -> attest -> GET ``resource`` with the token."""
    token = await attest_token(conn, tee, evidence)
    status, _, data = await conn.request(
        "GET", f"/kbs/v0/resource/{resource}", headers={"Authorization": f"Bearer {token}"}
    )
    if status != 200:
        raise RuntimeError(f"resource {status} {data[:200]!r}")


def provision(
    url: str, admin_token: str, resource: str, *, verify: str | bool = True, policy: str = ""
) -> None:
    """As a user would, over the admin API: ``resource`` (a secret), the sample TEE's reference
    values and, when ``policy`` is given, that Rego as the resource policy."""
    import httpx

    from trustpod.demo import SAMPLE_REFERENCE_VALUES

    h = {"authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=url, verify=verify, headers=h) as c:
        assert c.post(f"/kbs/v0/resource/{resource}", content=b"bench-secret").status_code == 200
        for name, value in SAMPLE_REFERENCE_VALUES.items():
            payload = base64.b64encode(json.dumps({name: value}).encode()).decode()
            msg = {"version": "0.1.0", "type": "sample", "payload": payload}
            r = c.post("/kbs/v0/reference-value", json=msg)
            assert r.status_code == 200, r.text
        if policy:
            encoded = base64.urlsafe_b64encode(policy.encode()).rstrip(b"=").decode()
            r = c.post("/kbs/v0/resource-policy", json={"policy": encoded})
            assert r.status_code == 200, r.text


async def _client(url: str, ctx: ssl.SSLContext | None, resource: str, until: float, st: FlowStats):
    conn = await Conn.open(url, ctx)
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            try:
                await one_flow(conn, resource)
                st.latencies.append(time.perf_counter() - t0)
            except (RuntimeError, OSError, asyncio.IncompleteReadError) as exc:
                st.errors += 1
                st.first_error = st.first_error or str(exc)
                conn.close()
                conn = await Conn.open(url, ctx)
    finally:
        conn.close()


def run_flows(
    url: str, clients: int, seconds: float, resource: str, cafile: str | None
) -> FlowStats:
    ctx = ssl.create_default_context(cafile=cafile) if cafile else None
    st = FlowStats()

    async def main() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(*(_client(url, ctx, resource, until, st) for _ in range(clients)))

    asyncio.run(main())
    return st
