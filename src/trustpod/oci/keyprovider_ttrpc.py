"""ocicrypt's keyprovider over ttRPC (``{"ttrpc": "unix:///…"}``, the CDH's transport) — I/O.

The same ``keyprovider.KeyProviderService`` messages as the gRPC transport
(``trustpod.oci.keyprovider_grpc.messages``), framed by the agent's ttRPC server
(``trustpod.agent.server``, ADR 0900); errors map through its one status table
(malformed → INVALID_ARGUMENT, denied → PERMISSION_DENIED, missing key → NOT_FOUND).
"""

from __future__ import annotations

from typing import Any

from trustpod.oci.keyprovider import METHOD_OPS, KekStore, handle_request
from trustpod.oci.keyprovider_grpc import SERVICE, messages

__all__ = ["call_ttrpc", "start_ttrpc"]

_IN, _OUT = "KeyProviderKeyWrapProtocolInput", "KeyProviderKeyWrapProtocolOutput"


def start_ttrpc(address: str, store: KekStore) -> Any:
    """Serve on ``address`` (``unix:///path`` or ``tcp:127.0.0.1:PORT``); the started server
    (``.addresses`` are the bound ones, ``.stop()`` ends it)."""
    from trustpod.agent.pb import protos
    from trustpod.agent.server import Route, TtrpcServer

    msg_in, msg_out = messages()

    def handler(op: str) -> Any:
        def run(request: Any) -> Any:
            return msg_out(**{_OUT: handle_request(getattr(request, _IN), store, expect_op=op)})

        return run

    routes = {(SERVICE, m): Route(msg_in, handler(op)) for m, op in METHOD_OPS.items()}
    server = TtrpcServer(protos(), routes)
    server.start(address)
    return server


def call_ttrpc(address: str, method: str, request_json: bytes, timeout_s: float = 10.0) -> bytes:
    """One ``WrapKey`` / ``UnWrapKey`` call → the response JSON (``RpcError`` on a refusal)."""
    from trustpod.agent.client import TtrpcClient

    msg_in, msg_out = messages()
    with TtrpcClient(address, timeout_s=timeout_s) as client:
        body = client.call_raw(SERVICE, method, msg_in(**{_IN: request_json}).SerializeToString())
    return bytes(getattr(msg_out.FromString(body), _OUT))
