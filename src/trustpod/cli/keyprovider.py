"""``trustpod keyprovider``: an ocicrypt ``cmd`` keyprovider for ``attestation-agent`` (§3.2).

One JSON request on stdin, one JSON response on stdout (ocicrypt's ``cmd`` transport), e.g. in
``OCICRYPT_KEYPROVIDER_CONFIG``::

    {"key-providers": {"attestation-agent": {"cmd": {"path": "trustpod",
        "args": ["keyprovider", "--key-dir", "/etc/trustpod/image-keys"]}}}}

KEKs: ``keypath=`` of the wrap parameters, else ``--key-dir/<repo>/<type>/<tag>`` for the ``kid``
``kbs:///<repo>/<type>/<tag>`` (the layout of the KBS's file resource backend).
``--grpc HOST:PORT`` / ``--ttrpc unix:///PATH`` serve the gRPC / ttRPC transports
(``{"grpc": "HOST:PORT"}`` / ``{"ttrpc": "unix:///PATH"}`` in that config).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "keyprovider", help="ocicrypt keyprovider (cmd transport: stdin/stdout JSON)"
    )
    p.add_argument("--key-dir", type=Path, default=None, help="KEKs by KBS resource path")
    t = p.add_mutually_exclusive_group()
    t.add_argument(
        "--grpc", metavar="HOST:PORT", default=None, help="serve keyprovider.KeyProviderService"
    )
    t.add_argument("--ttrpc", metavar="unix:///PATH", default=None, help="serve it over ttRPC")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from trustpod.oci.encrypt_cli import DirKekStore

    store = DirKekStore(args.key_dir)
    if args.grpc:
        from trustpod.oci.keyprovider_grpc import serve

        serve(args.grpc, store)
        return 0
    if args.ttrpc:
        import signal
        import threading

        from trustpod.oci.keyprovider_ttrpc import start_ttrpc

        server = start_ttrpc(args.ttrpc, store)
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
        return 0
    from trustpod.oci.keyprovider import MAX_REQUEST_BYTES, handle_request

    raw = sys.stdin.buffer.read(MAX_REQUEST_BYTES + 1)
    sys.stdout.buffer.write(handle_request(raw, store))
    sys.stdout.buffer.flush()
    return 0
