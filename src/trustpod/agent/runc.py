"""runc as the container runtime (kata's agent embeds ``rustjail``; trustpod drives runc).

Every container is ``runc create`` (init paused on runc's exec fifo) then ``runc start``; an
exec is ``runc exec --detach``. stdio is runc's *pass-through* mode: the pipes the agent hands
runc become the container process's fds 0-2, and runc's own messages go to ``--log``; a
process with ``terminal: true`` instead gets a new pty whose master runc sends to
``--console-socket`` (``trustpod.agent.console``). Because runc detaches, the container
process is re-parented to the nearest child subreaper: the agent sets
``PR_SET_CHILD_SUBREAPER`` at start (kata's agent is PID 1 in the VM) and reaps each process
with ``waitpid(pid)``, which gives the exit status kata reports (code, or 128+signal).

``--root`` is a private state directory (no clash with a host runc); cgroups are v1 here.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from trustpod.errors import DependencyError, NotFoundError

__all__ = [
    "ContainerRuntime",
    "RuncRuntime",
    "Stdio",
    "become_subreaper",
    "exit_code",
]

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
#: Kata's ``SIGNAL_EXIT_CODE_BASE``: a process killed by signal N exits 128 + N.
SIGNAL_EXIT_BASE = 128


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise DependencyError(
            f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(err)}",
            reason="agent.subreaper",
        )


def exit_code(wait_status: int) -> int:
    """kata's ``exit_code_from_wait_status``: exit code, or 128 + the terminating signal."""
    if os.WIFSIGNALED(wait_status):
        return SIGNAL_EXIT_BASE + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


@dataclass(frozen=True, slots=True)
class Stdio:
    """The child ends of a process's pipes (the agent keeps the other ends)."""

    stdin: int
    stdout: int
    stderr: int


class ContainerRuntime(Protocol):
    def create(
        self, container_id: str, bundle: Path, stdio: Stdio, *, console_socket: str = ""
    ) -> int: ...
    def start(self, container_id: str) -> None: ...
    def exec(
        self,
        container_id: str,
        process: dict[str, Any],
        stdio: Stdio,
        tag: str,
        *,
        console_socket: str = "",
    ) -> int: ...
    def delete(self, container_id: str) -> None: ...
    def stats(self, container_id: str) -> dict[str, Any]: ...


class RuncRuntime:
    """runc with a private ``--root``; ``state_dir`` holds pid files, logs and exec specs."""

    def __init__(
        self, state_dir: Path, *, binary: str = "runc", command_timeout_s: float = 60.0
    ) -> None:
        self.binary = binary
        self.state_dir = state_dir
        self.root = state_dir / "runc-root"
        self.work = state_dir / "runc-work"
        self.timeout = command_timeout_s
        for d in (self.root, self.work):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _runc(self, *args: str, stdio: Stdio | None = None, log_name: str = "") -> str:
        log_file = self.work / f"{log_name or 'runc'}.log"
        cmd = [self.binary, "--root", str(self.root), "--log", str(log_file)]
        cmd += ["--log-format", "json", *args]
        try:
            if stdio is None:
                proc = subprocess.run(cmd, capture_output=True, timeout=self.timeout, check=False)
                out, err = proc.stdout, proc.stderr
            else:
                proc = subprocess.run(
                    cmd,
                    stdin=stdio.stdin,
                    stdout=stdio.stdout,
                    stderr=stdio.stderr,
                    timeout=self.timeout,
                    check=False,
                )
                out, err = b"", b""
        except FileNotFoundError as exc:
            raise DependencyError(
                f"{self.binary} is not installed", reason="agent.no_runc", fix="apt install runc"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise DependencyError(f"runc {args[0]} timed out", reason="agent.runc") from exc
        if proc.returncode != 0:
            detail = err.decode(errors="replace").strip() or _last_error(log_file)
            if "not exist" in detail:  # runc: "container does not exist"
                raise NotFoundError(f"runc {args[0]}: {detail}", reason="agent.runc_not_found")
            raise DependencyError(f"runc {args[0]} failed: {detail}", reason="agent.runc")
        return out.decode(errors="replace")

    def create(
        self, container_id: str, bundle: Path, stdio: Stdio, *, console_socket: str = ""
    ) -> int:
        pid_file = self.work / f"{container_id}.pid"
        self._runc(
            "create",
            "--bundle",
            str(bundle),
            "--pid-file",
            str(pid_file),
            *_console(console_socket),
            container_id,
            stdio=stdio,
            log_name=container_id,
        )
        return int(pid_file.read_text().strip())

    def start(self, container_id: str) -> None:
        self._runc("start", container_id, log_name=container_id)

    def exec(
        self,
        container_id: str,
        process: dict[str, Any],
        stdio: Stdio,
        tag: str,
        *,
        console_socket: str = "",
    ) -> int:
        spec_file = self.work / f"{container_id}.{tag}.process.json"
        pid_file = self.work / f"{container_id}.{tag}.pid"
        fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(process, fh)
        try:
            self._runc(
                "exec",
                "--detach",
                "--pid-file",
                str(pid_file),
                "--process",
                str(spec_file),
                *_console(console_socket),
                container_id,
                stdio=stdio,
                log_name=f"{container_id}.{tag}",
            )
            return int(pid_file.read_text().strip())
        finally:
            spec_file.unlink(missing_ok=True)

    def delete(self, container_id: str) -> None:
        self._runc("delete", "--force", container_id)
        for f in self.work.glob(f"{container_id}.*"):
            f.unlink(missing_ok=True)

    def stats(self, container_id: str) -> dict[str, Any]:
        out = self._runc("events", "--stats", container_id)
        data: dict[str, Any] = json.loads(out).get("data", {})
        return data


def _console(socket_path: str) -> tuple[str, ...]:
    """A terminal process: runc sends the pty master to this socket (``trustpod.agent.console``)."""
    return ("--console-socket", socket_path) if socket_path else ()


def _last_error(log_file: Path) -> str:
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return "no runc log"
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") in ("error", "fatal"):
            return str(entry.get("msg", line))
    return lines[-1] if lines else "no runc log"
