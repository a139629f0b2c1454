"""The pod's shared PID namespace (kata's ``sandbox_pidns``, Pod ``shareProcessNamespace``).

As kata's agent does (``Sandbox::update_shared_pidns``, ``update_container_namespaces``):

- the PID namespace of the pod's first container (the pause container) is the sandbox's;
- a CreateContainer with ``sandbox_pidns`` joins it; otherwise the container gets a new one;
- ``sandbox_pidns`` while containers exist but no sandbox namespace does is refused
  (kata: "Sandbox does not have sandbox_pidns").

kata keeps the path ``/proc/<pause pid>/ns/pid``; here the agent holds the namespace open
(``/proc/<pause pid>/ns/pid`` opened once, when the pause container is created) and hands runc
``/proc/<agent pid>/fd/<n>``, a fresh duplicate per CreateContainer: a pause pid that was reused
by another process after the pause container went can never lead a container into a foreign
namespace. After the owning container is removed, ``sandbox_pidns`` is refused (its namespace's
init is gone, so nothing could run in it anyway).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

from trustpod.errors import EvidenceError

__all__ = ["SandboxPidNamespace"]

log = logging.getLogger(__name__)


class SandboxPidNamespace:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.owner = ""
        self._gone = False

    @contextlib.contextmanager
    def join_path(self, share: bool, *, containers: int) -> Iterator[str | None]:
        """The ``path`` of the container's ``pid`` namespace entry (None: a new namespace),
        valid until the ``with`` block ends. ``containers``: how many the pod has now."""
        if not share:
            yield None
            return
        with self._lock:
            if self._fd is None:
                if self._gone:
                    raise EvidenceError(
                        f"the sandbox's PID namespace is gone: container {self.owner} was removed",
                        reason="agent.sandbox_pidns",
                    )
                if containers:
                    raise EvidenceError(
                        "Sandbox does not have sandbox_pidns", reason="agent.sandbox_pidns"
                    )
                fd = None
            else:
                fd = os.dup(self._fd)
        if fd is None:  # the pod's first container: it makes the namespace
            yield None
            return
        try:
            yield f"/proc/{os.getpid()}/fd/{fd}"
        finally:
            os.close(fd)

    def record(self, cid: str, pid: int, *, containers: int) -> None:
        """After a container is created: the first one's namespace becomes the sandbox's."""
        with self._lock:
            if self._fd is not None or self._gone or containers:
                return
            try:
                self._fd = os.open(f"/proc/{pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:  # its init is already gone: no namespace to share
                log.warning("container %s: no PID namespace to share: %s", cid, exc.strerror)
                return
            self.owner = cid

    def removed(self, cid: str) -> None:
        with self._lock:
            if self._fd is None or cid != self.owner:
                return
            os.close(self._fd)
            self._fd = None
            self._gone = True

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
