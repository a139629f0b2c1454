"""``[storage_backend]`` (reference §3.1): Sqlite (trustpod's embedded default), Postgres,
Redis and Memory; upstream's ``LocalFs``/``LocalJson`` are refused with a fix. ``POSTGRES_URL``
and ``REDIS_URL`` override the backend URLs as upstream."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from trustpod.errors import ConfigError
from trustpod.kbs._toml import Table

__all__ = ["StorageConfig", "parse_storage"]

_log = logging.getLogger("trustpod.kbs.config")

_STORAGE_TYPES = {
    "Memory": "Memory",
    "memory": "Memory",
    "Sqlite": "Sqlite",
    "sqlite": "Sqlite",
    "Postgres": "Postgres",
    "postgres": "Postgres",
    "Redis": "Redis",
    "redis": "Redis",
}


@dataclass(frozen=True, slots=True)
class StorageConfig:
    storage_type: str = "Memory"
    sqlite_path: Path | None = None
    session_storage_type: str | None = None
    postgres_conninfo: str | None = None
    redis_url: str | None = None


def parse_storage(t: Table | None, session_type: str | None) -> StorageConfig:
    if t is None:
        _log.warning("no [storage_backend]: using Memory (state is lost on restart)")
        return StorageConfig(session_storage_type=_storage_type(session_type, None))
    kind = _storage_type(t.text("storage_type", "Memory"), t) or "Memory"
    sqlite_path: Path | None = None
    pg: str | None = os.environ.get("POSTGRES_URL")
    redis_url: str | None = os.environ.get("REDIS_URL")
    backends = t.table("backends")
    if backends is not None:
        sq = backends.table("sqlite")
        if sq is not None:
            sqlite_path = sq.path("path")
            sq.done()
        pg_t = backends.table("postgres")
        if pg_t is not None:
            parts = {
                "host": pg_t.text("host", "localhost"),
                "port": str(pg_t.integer("port", 5432, minimum=1)),
                "dbname": pg_t.text("db", "postgres"),
                "user": pg_t.text("username", "postgres"),
                "password": pg_t.text("password"),
            }
            pg_t.done()
            pg = pg or " ".join(f"{k}={v}" for k, v in parts.items() if v is not None)
        rd = backends.table("redis")
        if rd is not None:
            redis_url = redis_url or rd.text("url", "redis://127.0.0.1:6379")
            rd.done()
        for legacy in ("local_fs", "local_json"):
            backends.raw(legacy)
        backends.done()
    if kind == "Sqlite" and sqlite_path is None:
        raise ConfigError(
            f'{t.source}: storage_type = "Sqlite" needs storage_backend.backends.sqlite.path',
            reason="config.missing",
            fix='add [storage_backend.backends.sqlite] path = "/var/lib/trustpod/kbs.sqlite"',
        )
    if kind == "Postgres" and pg is None:
        pg = "host=localhost port=5432 dbname=postgres user=postgres"
    if kind == "Redis" and redis_url is None:
        redis_url = "redis://127.0.0.1:6379"
    t.done()
    return StorageConfig(kind, sqlite_path, _storage_type(session_type, t), pg, redis_url)


def _storage_type(kind: str | None, t: Table | None) -> str | None:
    if kind is None:
        return None
    if kind in _STORAGE_TYPES:
        return _STORAGE_TYPES[kind]
    where = f"{t.source}: " if t is not None else ""
    raise ConfigError(
        f"{where}storage_type = {kind!r} is not supported by trustpod",
        reason="config.unsupported",
        fix='use "Sqlite" with [storage_backend.backends.sqlite] path = "..." (embedded, '
        'shared by the KBS processes of one host), "Postgres", "Redis" or "Memory"',
    )
