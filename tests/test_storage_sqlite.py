"""SQLite storage backend: port semantics, threads, and two processes on one file."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from trustpod.errors import ConfigError
from trustpod.storage.memory import MemoryStore
from trustpod.storage.port import KeyValueStore
from trustpod.storage.sqlite import SqliteStore


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> KeyValueStore:
    if request.param == "sqlite":
        return SqliteStore(tmp_path / "kv.sqlite")
    return MemoryStore()


def test_port_semantics(store: KeyValueStore) -> None:
    assert isinstance(store, KeyValueStore)
    assert store.get("repository", "a/b/c") is None
    assert store.put("repository", "a/b/c", b"one") is True
    assert store.get("repository", "a/b/c") == b"one"
    assert store.put("repository", "a/b/c", b"two", overwrite=False) is False
    assert store.get("repository", "a/b/c") == b"one"
    assert store.put("repository", "a/b/c", b"three") is True
    assert store.get("repository", "a/b/c") == b"three"
    store.put("repository", "a/a/a", b"\x00\xff")
    assert store.list_keys("repository") == ["a/a/a", "a/b/c"]
    assert store.list_keys("kbs") == []
    assert store.get("kbs", "a/b/c") is None  # namespaces are separate
    assert store.delete("repository", "a/b/c") is True
    assert store.delete("repository", "a/b/c") is False
    with pytest.raises(ConfigError):
        store.get("nope", "x")
    store.close()


def test_sqlite_persists_and_threads(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "kv.sqlite"
    s = SqliteStore(path)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                s.put("kbs_protocol_session", f"{n}-{i}", b"x" * i)
                assert s.get("kbs_protocol_session", f"{n}-{i}") == b"x" * i
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    s.close()
    again = SqliteStore(path)
    assert len(again.list_keys("kbs_protocol_session")) == 200
    assert (path.parent / "kv.sqlite").exists()
    again.close()


def _writer(path: str, tag: str, n: int) -> None:
    s = SqliteStore(path)
    for i in range(n):
        s.put("repository", f"{tag}/{i}", tag.encode())
        s.put("kbs", "winner", tag.encode(), overwrite=False)
    s.close()


def test_two_processes_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    SqliteStore(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, tag, 100)) for tag in ("p1", "p2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    s = SqliteStore(path)
    keys = s.list_keys("repository")
    assert len(keys) == 200
    assert s.get("kbs", "winner") in (b"p1", b"p2")  # exactly one insert-if-absent won
    s.close()
