"""ocicrypt's keyprovider gRPC transport (``keyprovider.KeyProviderService``) — I/O.

Upstream proto (``guest-components/protos/.../keyprovider.proto``): ``WrapKey`` and ``UnWrapKey``
take ``KeyProviderKeyWrapProtocolInput { bytes KeyProviderKeyWrapProtocolInput = 1; }`` and return
``KeyProviderKeyWrapProtocolOutput { bytes KeyProviderKeyWrapProtocolOutput = 1; }``, the bytes
being the JSON of ``trustpod.oci.keyprovider``. The descriptor is built with protobuf's
``descriptor_pb2`` and the classes by ``message_factory`` (nothing encoded by hand). A refused
request is ``INVALID_ARGUMENT`` (malformed) or ``PERMISSION_DENIED`` (wrong key / refused).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from trustpod.errors import EvidenceError, TrustpodError
from trustpod.oci.keyprovider import METHOD_OPS, KekStore, handle_request

__all__ = ["SERVICE", "call", "messages", "serve", "start_server"]

log = logging.getLogger(__name__)

SERVICE = "keyprovider.KeyProviderService"
_IN, _OUT = "KeyProviderKeyWrapProtocolInput", "KeyProviderKeyWrapProtocolOutput"


@cache
def messages() -> tuple[Any, Any]:
    """(Input, Output) message classes."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="trustpod/keyprovider.proto", package="keyprovider", syntax="proto3"
    )
    for name in (_IN, _OUT):
        msg = fdp.message_type.add(name=name)
        msg.field.add(
            name=name,
            number=1,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        )
    svc = fdp.service.add(name="KeyProviderService")
    for method in ("WrapKey", "UnWrapKey"):
        svc.method.add(
            name=method, input_type=f".keyprovider.{_IN}", output_type=f".keyprovider.{_OUT}"
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"keyprovider.{n}"))
        for n in (_IN, _OUT)
    )  # type: ignore[return-value]


def start_server(address: str, store: KekStore, *, workers: int = 4) -> tuple[Any, int]:
    """Start serving on ``address`` (``host:port``; port 0 = ephemeral); (server, port)."""
    import grpc

    msg_in, msg_out = messages()

    def handler(expect: str) -> Any:
        def run(request: Any, context: Any) -> Any:
            raw = getattr(request, _IN)
            try:
                out = handle_request(raw, store, expect_op=expect)
            except EvidenceError as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except TrustpodError as exc:
                log.info("keyprovider request refused: %s", exc)
                context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            return msg_out(**{_OUT: out})

        return grpc.unary_unary_rpc_method_handler(
            run,
            request_deserializer=msg_in.FromString,
            response_serializer=msg_out.SerializeToString,
        )

    server = grpc.server(ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {m: handler(op) for m, op in METHOD_OPS.items()}
            ),
        )
    )
    port = server.add_insecure_port(address)
    server.start()
    return server, port


def serve(address: str, store: KekStore) -> None:
    """``trustpod keyprovider --grpc HOST:PORT``: serve until interrupted."""
    server, port = start_server(address, store)
    log.info("keyprovider gRPC on port %d", port)
    try:
        server.wait_for_termination()
    finally:
        server.stop(grace=1)


def call(address: str, method: str, request_json: bytes, timeout: float = 10.0) -> bytes:
    """A client call (tests and the CLI): ``WrapKey`` / ``UnWrapKey`` → the response JSON."""
    import grpc

    msg_in, msg_out = messages()
    with grpc.insecure_channel(address) as channel:
        stub = channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=msg_in.SerializeToString,
            response_deserializer=msg_out.FromString,
        )
        reply = stub(msg_in(**{_IN: request_json}), timeout=timeout)
    return bytes(getattr(reply, _OUT))
