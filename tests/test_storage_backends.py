"""Redis and PostgreSQL backends against real servers started by the tests (skipped when the
server binaries are missing)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from trustpod.errors import ConfigError, DependencyError
from trustpod.storage.port import KeyValueStore


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(redis_server: Any) -> str:
    return str(redis_server.url)


@pytest.fixture(scope="module")
def pg_conninfo(pg_server: Any) -> str:
    return str(pg_server.conninfo)


def test_pg_fixture_finds_installed_version_and_runs_unprivileged(pg_server: Any) -> None:
    from storage_servers import PG_USER, find_pg_bin

    found = find_pg_bin()
    assert found is not None and found == pg_server.bin
    assert (found / "postgres").exists()
    pid = int((pg_server.data / "postmaster.pid").read_text().split()[0])
    owner = os.stat(f"/proc/{pid}").st_uid
    if os.geteuid() == 0:
        import pwd

        assert owner == pwd.getpwnam(PG_USER).pw_uid != 0
    else:
        assert owner == os.geteuid()


def _exercise(store: KeyValueStore) -> None:
    assert store.get("repository", "a/b/c") is None
    assert store.put("repository", "a/b/c", b"\x00one")
    assert store.get("repository", "a/b/c") == b"\x00one"
    assert not store.put("repository", "a/b/c", b"two", overwrite=False)
    assert store.put("repository", "a/b/c", b"three")
    assert store.get("repository", "a/b/c") == b"three"
    store.put("repository", "a/a/a", b"x")
    store.put("kbs", "a/b/c", b"other")
    assert store.list_keys("repository") == ["a/a/a", "a/b/c"]
    assert store.delete("repository", "a/b/c") and not store.delete("repository", "a/b/c")
    with pytest.raises(ConfigError):
        store.get("nope", "x")


def test_redis(redis_url: str) -> None:
    from trustpod.storage.redis import RedisStore

    store = RedisStore(redis_url)
    _exercise(store)
    store.close()
    with pytest.raises(DependencyError):
        RedisStore(f"redis://127.0.0.1:{_port()}/0", timeout_s=0.5)


def test_postgres(pg_conninfo: str) -> None:
    from trustpod.storage.postgres import PostgresStore

    store = PostgresStore(pg_conninfo)
    _exercise(store)
    store.close()
    again = PostgresStore(pg_conninfo)  # tables exist already; data persisted
    assert again.list_keys("repository") == ["a/a/a"]
    again.close()
    with pytest.raises(DependencyError):
        PostgresStore(f"host=127.0.0.1 port={_port()} user=postgres connect_timeout=1", timeout_s=1)


def test_config_selects_backend(redis_url: str, pg_conninfo: str, tmp_path: Path) -> None:
    import tomllib

    from trustpod.kbs.config import parse_config
    from trustpod.kbs.wiring import open_store
    from trustpod.storage.postgres import PostgresStore
    from trustpod.storage.redis import RedisStore

    opts = dict(p.split("=", 1) for p in pg_conninfo.split())
    text = f"""session_storage_type = "Postgres"
[http_server]
insecure_http = true
[storage_backend]
storage_type = "Redis"
[storage_backend.backends.redis]
url = "{redis_url}"
[storage_backend.backends.postgres]
host = "{opts["host"]}"
port = {opts["port"]}
db = "postgres"
username = "postgres"
"""
    cfg = parse_config(tomllib.loads(text), tmp_path / "k.toml").storage_backend
    assert isinstance(open_store(cfg), RedisStore)
    assert isinstance(open_store(cfg, cfg.session_storage_type), PostgresStore)
