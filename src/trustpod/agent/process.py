"""One container process as the agent holds it: its stdio pipes, its pid and its exit status.

Reads follow kata's ``do_read_stream``: up to ``len`` bytes as soon as any are available, and
empty data at end of stream (the shim's EOF). WaitProcess returns kata's exit status (code, or
128 + signal), reaped by ``waitpid`` on the (re-parented) pid.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import threading

from trustpod.agent.runc import Stdio, exit_code
from trustpod.errors import EvidenceError

__all__ = ["POLL_INTERVAL_S", "Pipes", "Process", "signal_handled"]

log = logging.getLogger(__name__)

#: How often a blocked read re-checks that its process was not removed.
POLL_INTERVAL_S = 0.5


class Pipes:
    """Three pipes; ``child`` goes to runc, the agent keeps the other ends."""

    def __init__(self) -> None:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self.child = Stdio(in_r, out_w, err_w)
        self.stdin_w = in_w
        self.stdout_r = out_r
        self.stderr_r = err_r

    def close_child(self) -> None:
        for fd in (self.child.stdin, self.child.stdout, self.child.stderr):
            with contextlib.suppress(OSError):
                os.close(fd)

    def close_all(self) -> None:
        self.close_child()
        for fd in (self.stdin_w, self.stdout_r, self.stderr_r):
            with contextlib.suppress(OSError):
                os.close(fd)


def signal_handled(pid: int, sig: int) -> bool:
    """Whether ``pid`` catches ``sig`` (the ``SigCgt`` mask of /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    except (OSError, ValueError):
        return False
    return False


class Process:
    def __init__(
        self,
        exec_id: str,
        pid: int,
        pipes: Pipes,
        *,
        init: bool,
    ) -> None:
        self.exec_id = exec_id
        self.pid = pid
        self.init = init
        self._stdin: int | None = pipes.stdin_w
        self._out: dict[bool, int | None] = {True: pipes.stdout_r, False: pipes.stderr_r}
        self._lock = threading.Lock()
        self._removed = False
        self._readers = 0
        self.exited = threading.Event()
        self.status = 0
        self._waiter = threading.Thread(target=self._wait, name=f"wait-{pid}", daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        try:
            _, raw = os.waitpid(self.pid, 0)
            self.status = exit_code(raw)
        except ChildProcessError:
            # not our child (no subreaper): poll until it is gone; the status is unknown
            log.warning("process %d is not a child of the agent; exit status unknown", self.pid)
            while os.path.exists(f"/proc/{self.pid}"):
                if self.exited.wait(POLL_INTERVAL_S):
                    break
            self.status = 255
        self.exited.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        return self.exited.wait(timeout_s)

    def read(self, stdout: bool, length: int) -> bytes:
        with self._lock:
            fd = self._out[stdout]
            if fd is None or length <= 0:
                return b""
            # while a read is in flight its fd stays open (``close`` defers to the last
            # reader), so the number cannot be reused by another container's pipe meanwhile
            self._readers += 1
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            while not poller.poll(int(POLL_INTERVAL_S * 1000)):
                if self._removed:
                    return b""
            if self._removed:
                return b""
            try:
                return os.read(fd, length)
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    return b""
                raise
        finally:
            with self._lock:
                self._readers -= 1
                last = self._readers == 0 and self._removed
            if last:
                self._close_out()

    def write(self, data: bytes) -> int:
        with self._lock:
            fd = self._stdin
        if fd is None:
            raise EvidenceError("stdin is closed", reason="agent.stdin_closed")
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        return len(data)

    def close_stdin(self) -> None:
        with self._lock:
            fd, self._stdin = self._stdin, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def signal(self, sig: int) -> None:
        if self.exited.is_set():
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            log.info("signal %d to %d: process already gone", sig, self.pid)

    def _close_out(self) -> None:
        with self._lock:
            fds = [fd for fd in self._out.values() if fd is not None]
            self._out = {True: None, False: None}
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """Release the stdio (RemoveContainer / after WaitProcess of an exec); output fds
        still being read are closed by their last reader."""
        self.close_stdin()
        with self._lock:
            self._removed = True
            busy = self._readers > 0
        if not busy:
            self._close_out()
