"""SQLite backend of the storage port: the embedded default that needs no server.

One table ``kv(namespace, key, value, PRIMARY KEY(namespace, key))`` in WAL mode. Every thread gets
its own connection (``sqlite3`` connections must not be shared across threads), and several
processes may open the same file: WAL lets readers run while one writer commits, and
``busy_timeout`` makes a writer wait for the lock instead of failing. ``put(..., overwrite=False)``
is an atomic ``INSERT ... ON CONFLICT DO NOTHING``, so replicas racing to install a default agree
on one winner.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from trustpod.errors import ConfigError, DependencyError
from trustpod.storage.port import NAMESPACES

__all__ = ["DEFAULT_BUSY_TIMEOUT_MS", "SqliteStore"]

#: How long a writer waits for another process's write lock before failing (milliseconds).
DEFAULT_BUSY_TIMEOUT_MS = 10_000
_log = logging.getLogger(__name__)
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_RETRY_MIN_S = 0.0001
_RETRY_MAX_S = 0.0006

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID
"""


class SqliteStore:
    """``KeyValueStore`` over one SQLite file (WAL, a connection per thread).

    Args:
        path: the database file; its directory is created when missing.
        busy_timeout_ms: how long to wait for a lock held by another connection or process.
    """

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _create_private(self.path)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the storage file {self.path}: {exc}",
                reason="storage.sqlite.path",
                fix="set [storage_backend.backends.sqlite] path to a writable location",
            ) from exc
        with self._errors("initialise"):
            # before the first table: freed pages can be given back (reclaim()); no-op on an
            # existing file created without it
            self._execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._execute("PRAGMA journal_mode=WAL")
            self._execute(_SCHEMA)

    # -- connections ---------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        existing: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if existing is not None:
            return existing
        with self._errors("open"):
            conn = sqlite3.connect(
                str(self.path),
                timeout=0,  # lock waits are handled by _execute (short, jittered retries)
                isolation_level=None,  # autocommit: each statement is its own transaction
                check_same_thread=False,
            )
            self._run(conn.execute, "PRAGMA synchronous=NORMAL")
        self._local.conn = conn
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _run(self, call: Callable[..., sqlite3.Cursor], *args: Any) -> sqlite3.Cursor:
        """``call(*args)`` (a connection's ``execute`` or ``executescript``), retrying while
        another connection or process holds the write lock.

        SQLite's own busy handler sleeps 1, 2, 5, 10 ... 100 ms between attempts, which turns
        brief contention between KBS processes into long tails; here every retry waits
        0.1-0.6 ms (jittered) until ``busy_timeout_ms`` has passed.
        """
        deadline = 0.0
        while True:
            try:
                return call(*args)
            except sqlite3.OperationalError as exc:
                code = getattr(exc, "sqlite_errorcode", None)
                if code not in _BUSY_CODES:
                    raise
                now = time.monotonic()
                if not deadline:
                    deadline = now + self._busy_timeout_ms / 1000
                elif now >= deadline:
                    raise
                time.sleep(random.uniform(_RETRY_MIN_S, _RETRY_MAX_S))

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self._run(self._conn().execute, sql, params)

    def _errors(self, what: str) -> _ErrorScope:
        return _ErrorScope(what, self.path)

    @staticmethod
    def _check_ns(namespace: str) -> None:
        if namespace not in NAMESPACES:
            raise ConfigError(
                f"unknown storage namespace {namespace!r}", reason="storage.namespace"
            )

    # -- KeyValueStore ---------------------------------------------------------------------------
    def get(self, namespace: str, key: str) -> bytes | None:
        self._check_ns(namespace)
        with self._errors("read"):
            row = self._execute(
                "SELECT value FROM kv WHERE namespace=? AND key=?", (namespace, key)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, namespace: str, key: str, value: bytes, *, overwrite: bool = True) -> bool:
        self._check_ns(namespace)
        if overwrite:
            sql = (
                "INSERT INTO kv(namespace, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT(namespace, key) DO UPDATE SET value=excluded.value"
            )
        else:
            sql = "INSERT INTO kv(namespace, key, value) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
        with self._errors("write"):
            cur = self._execute(sql, (namespace, key, bytes(value)))
        return cur.rowcount > 0

    def delete(self, namespace: str, key: str) -> bool:
        self._check_ns(namespace)
        with self._errors("delete"):
            cur = self._execute("DELETE FROM kv WHERE namespace=? AND key=?", (namespace, key))
        return cur.rowcount > 0

    def list_keys(self, namespace: str) -> list[str]:
        self._check_ns(namespace)
        with self._errors("list"):
            rows = self._execute(
                "SELECT key FROM kv WHERE namespace=? ORDER BY key", (namespace,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def count(self, namespace: str) -> int:
        """Number of keys in ``namespace`` (one indexed query, no key list)."""
        self._check_ns(namespace)
        with self._errors("count"):
            row = self._execute(
                "SELECT COUNT(*) FROM kv WHERE namespace=?", (namespace,)
            ).fetchone()
        return int(row[0])

    def reclaim(self) -> None:
        """Give the pages of deleted rows back to the filesystem (incremental vacuum, then a
        WAL checkpoint that truncates the log); called after expired sessions are purged."""
        conn = self._conn()
        with self._errors("reclaim"):
            # executescript steps the pragma to completion (execute() frees one page)
            self._run(conn.executescript, "PRAGMA incremental_vacuum;")
            self._execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                pass
        self._local = threading.local()


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it (SQLite gives its ``-wal`` and
    ``-shm`` files the database file's mode). An existing file keeps its mode: a warning says
    when others can read it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            _log.warning(
                "%s is readable by other users (mode %o): chmod 600 it and its -wal/-shm files",
                path,
                mode,
            )
        return
    os.close(fd)


class _ErrorScope:
    """Turns ``sqlite3`` failures into ``DependencyError`` naming the operation and the file."""

    def __init__(self, what: str, path: Path) -> None:
        self._what = what
        self._path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> Literal[False]:
        if isinstance(exc, sqlite3.Error):
            raise DependencyError(
                f"SQLite {self._what} failed on {self._path}: {exc}",
                reason=f"storage.sqlite.{self._what}",
                fix="check that the file is writable and not on a network filesystem",
            ) from exc
        return False
