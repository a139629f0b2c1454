"""``trustpod agent serve --listen ADDR --config-dir D``: the pod's agent (AA + CDH + kata API);
``trustpod agent call --connect ADDR METHOD [JSON]``: one call from the host side.

See ``trustpod.agent.wiring`` for the start order and the config directory layout. Prints one
JSON line when serving (the bound ttRPC addresses and the guest API URL); stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _serve(args: argparse.Namespace) -> int:
    # regorus errors (an undefined rule is one, on every policy load) capture a Rust backtrace
    # when RUST_BACKTRACE=1 is inherited; resolving it maps the debug info: +55 MiB RSS.
    # RUST_LIB_BACKTRACE governs error backtraces only (panics still honour RUST_BACKTRACE).
    os.environ.setdefault("RUST_LIB_BACKTRACE", "0")
    from trustpod.agent.server import ServerSettings
    from trustpod.agent.wiring import AgentOptions, AgentProcess
    from trustpod.guest.run import GuestRuntime

    server = ServerSettings()
    if args.insecure_non_loopback_tcp:
        server = dataclasses.replace(server, insecure_non_loopback_tcp=True)
    options = AgentOptions(
        listen=tuple(args.listen),
        config_dir=args.config_dir,
        local_images=args.local_images,
        runc=args.runc,
        server=server,
    )
    runtime = GuestRuntime.from_dir(args.config_dir)

    def ready(addresses: list[str], api_url: str) -> None:
        print(json.dumps({"agent": addresses, "api": api_url}), flush=True)

    AgentProcess(runtime, options).run(ready)
    return 0


def _call(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from trustpod.agent.client import AgentClient
    from trustpod.agent.rpc import Code, RpcError
    from trustpod.errors import EvidenceError

    with AgentClient(args.connect, timeout_s=args.timeout) as agent:
        desc = agent.pb.methods().get(args.method)
        if desc is None:
            raise RpcError(Code.UNIMPLEMENTED, f"method {args.method} is not in agent.proto")
        request = agent.pb.message(desc.input_type.full_name)()
        try:
            json_format.Parse(args.request, request)
        except json_format.ParseError as exc:
            raise EvidenceError(
                f"request is not a {desc.input_type.name} in proto JSON: {exc}",
                reason="cli.agent_request",
            ) from exc
        response = agent.call(args.method, request)
    print(json_format.MessageToJson(response, preserving_proto_field_name=True, indent=None))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("agent", help="the pod's agent: kata's AgentService over ttRPC")
    sub = parser.add_subparsers(dest="agent_cmd", metavar="SUBCOMMAND")
    sub.required = True
    serve = sub.add_parser("serve", help="run AA + CDH + API + agent until SIGTERM/SIGINT")
    serve.add_argument(
        "--listen",
        action="append",
        required=True,
        help="unix:PATH, tcp:HOST:PORT or vsock:PORT (repeatable)",
    )
    serve.add_argument(
        "--config-dir",
        type=Path,
        required=True,
        help="guest run's directory (initdata.toml, cdh.toml, ...) plus pause/rootfs",
    )
    serve.add_argument(
        "--local-images",
        type=Path,
        help="serve images from unpacked root filesystems in this directory (no signature policy)",
    )
    serve.add_argument("--runc", default="runc", help="runc binary (default: runc on PATH)")
    serve.add_argument(
        "--insecure-non-loopback-tcp",
        action="store_true",
        help="allow a tcp: listen address that is not loopback (the API has no authentication)",
    )
    serve.set_defaults(func=_serve)
    call = sub.add_parser("call", help="one AgentService call over ttRPC (debugging, scripts)")
    call.add_argument("--connect", required=True, help="unix:PATH, tcp:HOST:PORT or vsock:CID:PORT")
    call.add_argument("method", help="AgentService method, e.g. GetGuestDetails")
    call.add_argument("request", nargs="?", default="{}", help="request in proto JSON")
    call.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    call.set_defaults(func=_call)
