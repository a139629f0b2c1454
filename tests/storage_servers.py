"""Real PostgreSQL and Redis servers for the tests, on 127.0.0.1 (ephemeral ports), stopped by PID.

PostgreSQL: the newest installed server under ``/usr/lib/postgresql/<version>/bin`` (Debian's
layout; ``$TRUSTPOD_PG_BIN`` overrides), run as a non-root system user created for it
(``trustpod-pg``) when the tests run as root, else as the current user. ``restart()`` stops it
with ``-m immediate`` (a crash, as far as clients can tell) and starts it again on the same port.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PG_USER", "Postgres", "Redis", "find_pg_bin", "free_port"]

PG_USER = "trustpod-pg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<N>/bin`` holding ``initdb`` (or ``$TRUSTPOD_PG_BIN``)."""
    env = os.environ.get("TRUSTPOD_PG_BIN")
    if env:
        return Path(env) if (Path(env) / "initdb").exists() else None
    found = [
        p / "bin"
        for p in Path("/usr/lib/postgresql").glob("*")
        if p.name.replace(".", "").isdigit() and (p / "bin" / "initdb").exists()
    ]
    found.sort(key=lambda p: [int(x) for x in p.parent.name.split(".")])
    return found[-1] if found else None


def _ensure_user() -> None:
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
            capture_output=True,
        )


class Postgres:
    """A throwaway cluster (``trust`` auth on 127.0.0.1, fsync off)."""

    def __init__(self) -> None:
        bin_dir = find_pg_bin()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL server binaries (apt-get install postgresql)")
        self.bin = bin_dir
        self.version = bin_dir.parent.name
        # the server user cannot enter pytest's 0700 tmp tree: a directory of its own
        self.dir = Path(tempfile.mkdtemp(prefix="trustpod-pg-"))
        self.as_root = os.geteuid() == 0
        if self.as_root:
            _ensure_user()
            shutil.chown(self.dir, PG_USER, PG_USER)
        self.data = self.dir / "data"
        self.port = free_port()
        self._run(f"{self.bin}/initdb -D {self.data} -U postgres -A trust --no-sync -E UTF8")
        self.start()

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def _run(self, cmd: str) -> subprocess.CompletedProcess[str]:
        argv = ["su", PG_USER, "-s", "/bin/sh", "-c", cmd] if self.as_root else ["sh", "-c", cmd]
        return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            f"{self.bin}/pg_ctl -D {self.data} -l {self.dir}/pg.log -o '{opts}' -w -t 30 start"
        )
        _wait_port(self.port)

    def stop(self) -> None:
        self._run(f"{self.bin}/pg_ctl -D {self.data} -m immediate -w -t 30 stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    """``redis-server`` without persistence."""

    def __init__(self, directory: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError("redis-server (apt-get install redis-server)")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        _wait_port(self.port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
