"""One container process as the agent holds it: its stdio, its pid and its exit status.

Reads follow kata's ``do_read_stream``: up to ``len`` bytes as soon as any are available, and
empty data at end of stream (the shim's EOF). WaitProcess returns kata's exit status (code, or
128 + signal), reaped by ``waitpid`` on the (re-parented) pid.

stdio is either three pipes (``Pipes``) or a pseudo-terminal (``Terminal``, kata's
``term_master``): then stdin, stdout and stderr are all the pty master, so ReadStdout and
ReadStderr both read the terminal's output (stderr is merged into it, and kata reads the master
for either call), WriteStdin writes the master, and TtyWinResize sets its window size. As in
kata:

- CloseStdin of a terminal process drops the master (kata closes ``term_master`` with the
  stdin pipe): the terminal is hung up (the kernel sends SIGHUP to its session, reads of the
  slave end) once no read is in flight; later reads return end of stream;
- after the process exits, a read waits at most ``TERMINAL_DRAIN_S`` for output still buffered
  (kata's ``DRAIN_DEADLINE_MS``), then reports end of stream even if a background child keeps
  the terminal open; the master's ``EIO`` (every slave closed) is end of stream too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import struct
import termios
import threading
import time

from trustpod.agent.runc import Stdio, exit_code
from trustpod.errors import EvidenceError

__all__ = ["POLL_INTERVAL_S", "TERMINAL_DRAIN_S", "Pipes", "Process", "Terminal", "signal_handled"]

log = logging.getLogger(__name__)

#: How often a blocked read re-checks that its process was not removed.
POLL_INTERVAL_S = 0.5
#: After a terminal process exits, how long a read still waits for buffered output.
TERMINAL_DRAIN_S = 0.5
_DRAIN_POLL_S = 0.05


class Pipes:
    """Three pipes; ``child`` goes to runc, the agent keeps the other ends."""

    tty = False

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


class Terminal:
    """A pty master (from runc's console socket) as the process's stdin, stdout and stderr:
    three descriptors of the one open master, so each closes on its own and the terminal hangs
    up when the last one does."""

    tty = True

    def __init__(self, master: int) -> None:
        self.stdin_w = master
        self.stdout_r = os.dup(master)
        self.stderr_r = os.dup(master)

    def close_all(self) -> None:
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
        pipes: Pipes | Terminal,
        *,
        init: bool,
    ) -> None:
        self.exec_id = exec_id
        self.pid = pid
        self.init = init
        self.tty = pipes.tty
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
            if not self._wait_readable(fd):
                return b""
            try:
                return os.read(fd, length)
            except OSError as exc:
                # EIO: a pty master whose slave side is closed (the terminal's end of stream)
                if exc.errno == errno.EBADF or (self.tty and exc.errno == errno.EIO):
                    return b""
                raise
        finally:
            with self._lock:
                self._readers -= 1
                last = self._readers == 0 and self._removed
            if last:
                self._close_out()

    def _wait_readable(self, fd: int) -> bool:
        """Until ``fd`` has data or an end; False when the process was removed (or its
        terminal hung up), or its terminal stayed silent ``TERMINAL_DRAIN_S`` after the exit."""
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        drain_until: float | None = None
        while True:
            if drain_until is None and self.tty and self.exited.is_set():
                drain_until = time.monotonic() + TERMINAL_DRAIN_S
            wait_s = POLL_INTERVAL_S if drain_until is None else _DRAIN_POLL_S
            if poller.poll(int(wait_s * 1000)):
                return not self._removed
            if self._removed:
                return False
            if drain_until is not None and time.monotonic() >= drain_until:
                return False

    def resize(self, rows: int, columns: int) -> bool:
        """TIOCSWINSZ on the terminal (the kernel signals SIGWINCH to its foreground process
        group); False when the process has no (more) terminal."""
        with self._lock:
            fd = self._out[True] if self.tty else None
            if fd is None:
                return False
            # under the lock: ``_close_out`` cannot close (and the number be reused) meanwhile
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        return True

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
        """The pipe's EOF; for a terminal kata's hang-up (the master is dropped)."""
        if self.tty:
            self.close()
        else:
            self._close_stdin()

    def _close_stdin(self) -> None:
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
        self._close_stdin()
        with self._lock:
            self._removed = True
            busy = self._readers > 0
        if not busy:
            self._close_out()
