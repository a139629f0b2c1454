"""The pod's log pump (the shim's IO copy): container stdout/stderr → ``STORE/<pod>/logs``.

``python -m trustpod.pod.logpump STORE POD``: for every container, one thread reads ReadStdout
and one ReadStderr until EOF, appending to ``<ctr>.log`` (0600); then ``WaitProcess`` and the
exit status goes to ``<ctr>.exit``. Exits when every container has exited or the agent is gone.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from trustpod.errors import TrustpodError
from trustpod.pod.exec import STREAM_TIMEOUT_S
from trustpod.pod.store import PodStore

__all__ = ["main", "pump"]

_CHUNK = 32 * 1024


def _append(path: Path, lock: threading.Lock) -> Any:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(data: bytes) -> None:
        with lock:
            os.write(fd, data)

    return write, fd


def _read(address: str, method: str, cid: str, write: Any) -> None:
    from trustpod.agent.client import AgentClient

    try:
        agent = AgentClient(address)  # one connection per stream
    except (OSError, TrustpodError):
        return
    with agent:
        _copy(agent, method, cid, write)


def _copy(agent: Any, method: str, cid: str, write: Any) -> None:
    pb = agent.pb
    while True:
        try:
            data = agent.call(
                method,
                pb.grpc.ReadStreamRequest(container_id=cid, len=_CHUNK),
                timeout_s=STREAM_TIMEOUT_S,
            ).data
        except (OSError, TrustpodError):
            return
        if not data:
            return
        write(data)


def pump(store: PodStore, name: str) -> None:
    from trustpod.agent.client import AgentClient

    record = store.get(name)
    with AgentClient(record.agent_address) as agent:
        threads = []
        for cname, cid in record.containers.items():
            path = store.log_path(name, cname)
            write, _fd = _append(path, threading.Lock())
            readers = [
                threading.Thread(
                    target=_read, args=(record.agent_address, m, cid, write), daemon=True
                )
                for m in ("ReadStdout", "ReadStderr")
            ]
            for t in readers:
                t.start()
            t = threading.Thread(target=_wait, args=(agent, cid, path, readers), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join()


def _wait(agent: Any, cid: str, path: Path, readers: list[threading.Thread]) -> None:
    for t in readers:  # EOF on both streams first: the agent drops them once waited
        t.join()
    try:
        status = agent.call(
            "WaitProcess",
            agent.pb.grpc.WaitProcessRequest(container_id=cid),
            timeout_s=STREAM_TIMEOUT_S,
        ).status
    except (OSError, TrustpodError):
        return
    exit_path = path.with_suffix(".exit")
    tmp = path.with_suffix(".exit.tmp")
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(out, f"{status}\n".encode())
    os.close(out)
    os.replace(tmp, exit_path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    try:
        pump(PodStore(Path(args[0])), args[1])
    except (OSError, TrustpodError) as exc:
        print(f"log pump: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
