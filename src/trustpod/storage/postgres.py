"""PostgreSQL backend of the storage port (upstream's layout: one table per namespace with
columns ``key TEXT PRIMARY KEY, value BYTEA``).

A connection per thread (autocommit); ``put(..., overwrite=False)`` is
``INSERT ... ON CONFLICT DO NOTHING``. Failures become ``DependencyError`` naming PostgreSQL (the
KBS answers 503). A connection found broken (server restarted, failover) is replaced and the
statement retried once, so the KBS recovers by itself when the server is back; while it is down
every request fails fast (connection refused) with that 503.
"""

from __future__ import annotations

import threading
from typing import Any

from trustpod.errors import ConfigError, DependencyError
from trustpod.storage.port import NAMESPACES

__all__ = ["PostgresStore"]

_INIT_LOCK = 0x7472757374706F64  # "trustpod": advisory lock key of the schema set-up


class PostgresStore:
    """``KeyValueStore`` over PostgreSQL (``conninfo`` as psycopg accepts it)."""

    def __init__(self, conninfo: str, *, timeout_s: int = 10) -> None:
        import psycopg

        self._pg: Any = psycopg
        self._conninfo = conninfo
        self._timeout = timeout_s
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        from psycopg import sql

        def q(template: str, ns: str) -> Any:
            return sql.SQL(template).format(sql.Identifier(ns))

        # Statements composed once with quoted identifiers (namespaces are a fixed set).
        self._q = {
            ns: {
                "create": q(
                    "CREATE TABLE IF NOT EXISTS {} (key TEXT PRIMARY KEY, value BYTEA)", ns
                ),
                "get": q("SELECT value FROM {} WHERE key = %s", ns),
                "upsert": q(
                    "INSERT INTO {} (key, value) VALUES (%s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    ns,
                ),
                "insert": q(
                    "INSERT INTO {} (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING", ns
                ),
                "delete": q("DELETE FROM {} WHERE key = %s", ns),
                "list": q("SELECT key FROM {} ORDER BY key", ns),
            }
            for ns in NAMESPACES
        }
        conn = self._conn()
        # Replicas starting together race on CREATE TABLE IF NOT EXISTS (it is not atomic in
        # PostgreSQL: "duplicate key ... pg_type_typname_nsp_index"): serialise it with a
        # transaction-scoped advisory lock.
        with self._errors("initialise"), conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INIT_LOCK,))
            for ns in NAMESPACES:
                conn.execute(self._q[ns]["create"])

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            with self._errors("connect"):
                conn = self._pg.connect(
                    self._conninfo, autocommit=True, connect_timeout=self._timeout
                )
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _errors(self, what: str) -> _Scope:
        return _Scope(self._pg, what)

    def _sql(self, namespace: str, op: str) -> Any:
        try:
            return self._q[namespace][op]
        except KeyError:
            raise ConfigError(
                f"unknown storage namespace {namespace!r}", reason="storage.namespace"
            ) from None

    def _execute(self, what: str, stmt: Any, params: tuple[Any, ...] = ()) -> Any:
        """Run ``stmt``; a broken per-thread connection is replaced and the statement retried once
        (every statement here is idempotent)."""
        with self._errors(what):
            conn = self._conn()
            try:
                return conn.execute(stmt, params)
            except self._pg.OperationalError:
                if not (conn.broken or conn.closed):
                    raise
                self._local.conn = None
                with self._lock:
                    if conn in self._all:
                        self._all.remove(conn)
                conn.close()
                return self._conn().execute(stmt, params)

    def get(self, namespace: str, key: str) -> bytes | None:
        stmt = self._sql(namespace, "get")
        cur = self._execute("read", stmt, (key,))
        with self._errors("read"):
            row = cur.fetchone()
        return None if row is None else bytes(row[0])

    def put(self, namespace: str, key: str, value: bytes, *, overwrite: bool = True) -> bool:
        stmt = self._sql(namespace, "upsert" if overwrite else "insert")
        cur = self._execute("write", stmt, (key, bytes(value)))
        return bool(cur.rowcount > 0)

    def delete(self, namespace: str, key: str) -> bool:
        stmt = self._sql(namespace, "delete")
        cur = self._execute("delete", stmt, (key,))
        return bool(cur.rowcount > 0)

    def list_keys(self, namespace: str) -> list[str]:
        stmt = self._sql(namespace, "list")
        cur = self._execute("list", stmt)
        with self._errors("list"):
            rows = cur.fetchall()
        return [str(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()


class _Scope:
    def __init__(self, pg: Any, what: str) -> None:
        self._pg = pg
        self._what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None and isinstance(exc, self._pg.Error):
            raise DependencyError(
                f"PostgreSQL {self._what} failed: {exc}",
                reason=f"storage.postgres.{self._what}",
                fix="check [storage_backend.backends.postgres] (or POSTGRES_URL) and the server",
            ) from exc
