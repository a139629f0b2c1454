"""Start and stop a real ``swtpm`` (TPM 2.0 socket mode on 127.0.0.1) for the emulated CVM.

The TPM state lives in a directory (a private temporary one by default, removed on stop). The
server listens on an ephemeral port P and the control channel on P+1 (the ``swtpm`` TCTI
derives the control port from the server port). The process is stopped by its PID only.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from trustpod.errors import DependencyError

__all__ = ["SWTPM_START_TIMEOUT_S", "SwtpmProcess", "swtpm_binary"]

_log = logging.getLogger(__name__)

#: How long to wait for both swtpm sockets to accept connections.
SWTPM_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0
_HOST = "127.0.0.1"


def swtpm_binary() -> str | None:
    """Path of the ``swtpm`` binary, or ``None`` when it is not installed."""
    return shutil.which("swtpm")


def _free_port_pair() -> int:
    """An ephemeral port P such that P and P+1 are both free on 127.0.0.1 right now."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind((_HOST, 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind((_HOST, port + 1))
                except OSError:
                    continue
                return port
    raise DependencyError("no free port pair for swtpm", reason="swtpm.ports")


def _wait_listening(port: int, deadline: float, proc: subprocess.Popen[bytes]) -> None:
    while True:
        if proc.poll() is not None:
            raise DependencyError(
                f"swtpm exited with status {proc.returncode} during start",
                reason="swtpm.start",
                fix="see the swtpm log in the state directory",
            )
        try:
            socket.create_connection((_HOST, port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise DependencyError(
                    f"swtpm did not listen on {_HOST}:{port} in time", reason="swtpm.start"
                ) from None
            time.sleep(0.02)


class SwtpmProcess:
    """A running swtpm. Use as a context manager, or call :meth:`start` / :meth:`stop`."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self._own_dir = state_dir is None
        self.state_dir = state_dir
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def tcti(self) -> str:
        """TCTI string for tpm2-pytss: ``swtpm:host=127.0.0.1,port=P``."""
        return f"swtpm:host={_HOST},port={self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, *, attempts: int = 3) -> SwtpmProcess:
        """Start swtpm; retried with new ports if another process grabbed them meanwhile."""
        for attempt in range(attempts):
            try:
                return self._start_once()
            except DependencyError as exc:
                if exc.reason != "swtpm.start" or attempt == attempts - 1:
                    self.stop()
                    raise
                _log.info("swtpm start failed (%s); retrying with other ports", exc.message)
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_once(self) -> SwtpmProcess:
        binary = swtpm_binary()
        if binary is None:
            raise DependencyError(
                "the swtpm binary is not installed",
                reason="swtpm.missing",
                fix="apt-get install swtpm swtpm-tools, or use the software TPM back end",
            )
        if self.state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix="trustpod-swtpm-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port_pair()
        args = [
            binary,
            "socket",
            "--tpm2",
            "--server",
            f"type=tcp,port={self.port},bindaddr={_HOST}",
            "--ctrl",
            f"type=tcp,port={self.port + 1},bindaddr={_HOST}",
            "--flags",
            "not-need-init,startup-clear",
            "--tpmstate",
            f"dir={self.state_dir}",
            "--log",
            f"file={self.state_dir / 'swtpm.log'},level=1",
        ]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + SWTPM_START_TIMEOUT_S
        try:
            _wait_listening(self.port, deadline, self._proc)
            _wait_listening(self.port + 1, deadline, self._proc)
        except DependencyError:
            self._stop_process()
            raise
        _log.info("swtpm pid %s on %s:%d (state %s)", self.pid, _HOST, self.port, self.state_dir)
        return self

    def stop(self) -> None:
        """Terminate the process by PID (kill after a grace period); remove a private state dir."""
        self._stop_process()
        if self._own_dir and self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.state_dir = None

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=_STOP_TIMEOUT_S)

    def __enter__(self) -> SwtpmProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
