"""``pod exec``: ExecProcess in a pod's container over its agent; output and exit status."""

from __future__ import annotations

import threading
from typing import BinaryIO

from trustpod.errors import NotFoundError, PolicyDenied, TrustpodError
from trustpod.pod.requests import exec_request
from trustpod.pod.store import PodRecord

__all__ = ["exec_in_pod"]


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
            while True:
                try:
                    data = agent.call(
                        method,
                        pb.grpc.ReadStreamRequest(container_id=cid, exec_id=exec_id, len=32768),
                        timeout_s=None,
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
        status: int = agent.call(
            "WaitProcess",
            pb.grpc.WaitProcessRequest(container_id=cid, exec_id=exec_id),
            timeout_s=None,
        ).status
        for t in threads:
            t.join(10)
        return status
