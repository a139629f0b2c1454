"""Redis and PostgreSQL backends against real servers started by the tests (skipped when the
server binaries are missing)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustpod.errors import ConfigError, DependencyError
from trustpod.storage.port import KeyValueStore

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    port = _port()
    d = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(d),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def pg_conninfo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not (PG_BIN / "initdb").exists() or os.geteuid() != 0:
        pytest.skip("PostgreSQL 15 binaries (run as root) not available")
    # the postgres user cannot enter pytest's 0700 tmp tree: use a directory of its own
    d = Path(tempfile.mkdtemp(prefix="trustpod-pg-"))
    shutil.chown(d, "postgres", "postgres")
    data = d / "data"
    port = _port()
    su = ["su", "postgres", "-s", "/bin/sh", "-c"]
    subprocess.run(
        [*su, f"{PG_BIN}/initdb -D {data} -U postgres -A trust --no-sync -E UTF8"],
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*su, f"{PG_BIN}/pg_ctl -D {data} -l {d}/pg.log -o '{opts}' -w -t 30 start"],
        check=True,
        capture_output=True,
    )
    yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    subprocess.run([*su, f"{PG_BIN}/pg_ctl -D {data} -m immediate -w stop"], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


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
