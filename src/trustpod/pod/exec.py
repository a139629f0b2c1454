"""``pod exec``: ExecProcess in a pod's container over its agent; output and exit status."""

from __future__ import annotations

import threading
from typing import Any, BinaryIO

from trustpod.errors import NotFoundError, PolicyDenied, TrustpodError
from trustpod.pod.requests import exec_request
from trustpod.pod.store import PodRecord

__all__ = ["STREAM_TIMEOUT_S", "exec_in_pod"]

#: Deadline of one blocking stream read / wait (the agent answers when data or exit arrives).
STREAM_TIMEOUT_S = 24 * 3600.0


def exec_in_pod(
    record: PodRecord, container: str, argv: list[str], exec_id: str, out: BinaryIO
) -> int:
    from trustpod.agent.client import AgentClient
    from trustpod.agent.rpc import Code, RpcError

    cid = record.containers.get(container)
    if cid is None:
        raise NotFoundError(
            f"pod {record.name} has no container {container!r}", reason="pod.container"
        )
    if not argv:
        raise TrustpodError("no command given", reason="pod.exec", fix="pod exec NAME -- CMD ...")
    with AgentClient(record.agent_address) as agent:
        pb = agent.pb
        try:
            agent.call("ExecProcess", exec_request(pb, cid, exec_id, argv))
        except RpcError as exc:
            if exc.code == Code.PERMISSION_DENIED:
                raise PolicyDenied(
                    exc.status_message,
                    reason="pod.exec_denied",
                    fix="the pod's initdata policy does not allow this exec",
                ) from exc
            raise
        lock = threading.Lock()

        def read(method: str) -> None:
            try:
                conn = AgentClient(record.agent_address)  # one connection per stream
            except (OSError, TrustpodError):
                return
            with conn:
                pump(conn, method)

        def pump(conn: Any, method: str) -> None:
            while True:
                try:
                    data = conn.call(
                        method,
                        pb.grpc.ReadStreamRequest(container_id=cid, exec_id=exec_id, len=32768),
                        timeout_s=STREAM_TIMEOUT_S,
                    ).data
                except TrustpodError:
                    return
                if not data:
                    return
                with lock:
                    out.write(data)
                    out.flush()

        threads = [
            threading.Thread(target=read, args=(m,), daemon=True)
            for m in ("ReadStdout", "ReadStderr")
        ]
        for t in threads:
            t.start()
        for t in threads:  # EOF on both streams first: the agent drops them once waited
            t.join()
        status: int = agent.call(
            "WaitProcess",
            pb.grpc.WaitProcessRequest(container_id=cid, exec_id=exec_id),
            timeout_s=STREAM_TIMEOUT_S,
        ).status
        return status
