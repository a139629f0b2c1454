"""runc's console socket: how a detached container process with ``terminal: true`` gets a pty.

``runc create`` / ``runc exec --detach`` with ``--console-socket PATH`` create the pseudo-terminal
inside the container, connect to the unix socket at ``PATH`` and send the pty *master* over it
with ``SCM_RIGHTS`` (runc docs/terminals.md, "detached new terminal"); after runc exits the
receiver holds the only copy of the master. runc's own stdio is then unused by the container:
it gets ``/dev/null`` (its messages go to ``--log``).

The socket lives in a fresh 0700 directory (containers never see it: they share the agent's
network namespace, so an abstract socket would be reachable from them). Only a connection from
the agent's own user is accepted, and only a pty master (the ``/dev/ptmx`` character device,
5:2) with nothing else attached; anything else fails closed.
"""

from __future__ import annotations

import array
import contextlib
import os
import shutil
import signal
import socket
import stat
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from trustpod.agent.process import Pipes, Terminal
from trustpod.agent.runc import Stdio
from trustpod.errors import DependencyError

__all__ = ["ConsoleSocket", "launch", "null_stdio"]

#: ``run(stdio, console_socket)``: one runc create/exec; returns the process's pid.
Launcher = Callable[[Stdio, str], int]

#: ``sun_path`` holds 108 bytes including the terminating NUL.
_SUN_PATH_MAX = 107
#: ``/dev/ptmx``: character device major 5, minor 2 (what runc's pty master is).
_PTMX = (5, 2)
#: runc sends the master's name ("/dev/ptmx") with the descriptor; anything longer is not runc.
_MAX_MESSAGE = 4096


@contextlib.contextmanager
def null_stdio() -> Iterator[Stdio]:
    """runc's own stdin/stdout/stderr when the container process has a terminal."""
    fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        yield Stdio(fd, fd, fd)
    finally:
        os.close(fd)


class ConsoleSocket:
    """A listening unix socket for one runc invocation; ``receive`` returns the pty master."""

    def __init__(self, base_dir: Path, *, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        # a pod's container ids are 64 hex digits: keep the path well within sun_path
        parent: str | None = str(base_dir)
        if len(str(base_dir)) + 24 > _SUN_PATH_MAX:
            parent = None  # the system temp dir
        self.dir = Path(tempfile.mkdtemp(prefix="tty-", dir=parent))  # mode 0700
        self.path = str(self.dir / "s")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(self.path)
            self._sock.listen(1)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ConsoleSocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def receive(self) -> int:
        """The pty master runc sent (close-on-exec); waits at most ``timeout_s``."""
        self._sock.settimeout(self.timeout_s)
        try:
            conn, _ = self._sock.accept()
        except TimeoutError as exc:
            raise DependencyError(
                "runc did not send the terminal over the console socket", reason="agent.console"
            ) from exc
        with conn:
            conn.settimeout(self.timeout_s)
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _, uid, _ = struct.unpack("3i", creds)
            try:
                fds = _recv_fds(conn)
            except OSError as exc:
                raise DependencyError(
                    f"console socket: {exc.strerror or exc}", reason="agent.console"
                ) from exc
        if uid != os.geteuid() or len(fds) != 1 or not _is_pty_master(fds[0]):
            for fd in fds:
                os.close(fd)
            raise DependencyError(
                f"console socket: expected one pty master from uid {os.geteuid()}, got "
                f"{len(fds)} descriptor(s) from uid {uid}",
                reason="agent.console",
            )
        return fds[0]


def _recv_fds(conn: socket.socket, max_fds: int = 4) -> list[int]:
    """The descriptors of one message, close-on-exec from the start (``socket.recv_fds``
    drops its ``flags`` argument before Python 3.12, so ``MSG_CMSG_CLOEXEC`` is passed here)."""
    item = array.array("i")
    _, ancdata, _, _ = conn.recvmsg(
        _MAX_MESSAGE, socket.CMSG_SPACE(max_fds * item.itemsize), socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            item.frombytes(data[: len(data) - (len(data) % item.itemsize)])
    return list(item)


def _is_pty_master(fd: int) -> bool:
    st = os.fstat(fd)
    rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return stat.S_ISCHR(st.st_mode) and rdev == _PTMX and os.isatty(fd)


def launch(
    run: Launcher,
    *,
    tty: bool,
    socket_dir: Path,
    timeout_s: float,
    undo: Callable[[int], None] | None = None,
) -> tuple[int, Pipes | Terminal]:
    """``run`` with fresh pipes, or (``tty``) with a console socket and the pty master it
    delivers. When runc succeeded but no terminal arrived, the process is killed and reaped
    (``undo(pid)`` first, e.g. ``runc delete``) and the error raised."""
    if not tty:
        pipes = Pipes()
        try:
            pid = run(pipes.child, "")
        except BaseException:
            pipes.close_all()
            raise
        pipes.close_child()
        return pid, pipes
    with ConsoleSocket(socket_dir, timeout_s=timeout_s) as console, null_stdio() as stdio:
        pid = run(stdio, console.path)
        try:
            master = console.receive()
        except BaseException:
            if undo is not None:
                undo(pid)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            raise
    return pid, Terminal(master)
