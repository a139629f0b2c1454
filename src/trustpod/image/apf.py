"""The pod VM's agent-protocol-forwarder (CAA's ``agent-protocol-forwarder``, guest side):
accepts TCP on the VM's NIC and relays each connection byte for byte to the agent's unix
socket, so the agent itself never listens on a network address.

``python3 -m trustpod.image.apf --listen 10.0.2.15:15150 --to /run/peerpod/agent.sock``. Under
QEMU user-mode networking the NIC is reachable only through the host's ``hostfwd`` on
127.0.0.1. No TLS here (CAA's forwarder has optional TLS): the channel is host-local.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading

__all__ = ["MAX_CONNECTIONS", "main", "relay", "serve"]

#: concurrent relayed connections (the shim opens a handful)
MAX_CONNECTIONS = 64
_CHUNK = 64 * 1024


def relay(a: socket.socket, b: socket.socket) -> None:
    """Copy a -> b until EOF, then half-close b."""
    try:
        while data := a.recv(_CHUNK):
            b.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)


def _handle(client: socket.socket, target: str, slots: threading.Semaphore) -> None:
    try:
        with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as agent:
            try:
                agent.connect(target)
            except OSError:
                return
            back = threading.Thread(target=relay, args=(agent, client), daemon=True)
            back.start()
            relay(client, agent)
            back.join()
    finally:
        slots.release()


def serve(host: str, port: int, target: str) -> None:
    slots = threading.Semaphore(MAX_CONNECTIONS)
    with socket.create_server((host, port), reuse_port=False) as server:
        while True:
            client, _ = server.accept()
            if not slots.acquire(blocking=False):
                client.close()
                continue
            threading.Thread(target=_handle, args=(client, target, slots), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trustpod-apf")
    p.add_argument("--listen", required=True, help="HOST:PORT on the VM's NIC")
    p.add_argument("--to", required=True, help="the agent's unix socket")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    serve(host, int(port), args.to)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
