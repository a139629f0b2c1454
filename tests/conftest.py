"""Shared fixtures: upstream vectors (read in place from TRUSTPOD_VECTORS, never copied)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "vectors"


def vectors_root() -> Path:
    return Path(os.environ.get("TRUSTPOD_VECTORS", str(_DEFAULT)))


@pytest.fixture(scope="session")
def trustee_vectors() -> Path:
    """Root of the upstream Trustee vectors (``.../vectors/trustee``); skips when absent."""
    root = vectors_root() / "trustee"
    if not root.is_dir():
        pytest.skip(f"Trustee vectors not found at {root} (set TRUSTPOD_VECTORS)")
    return root


@pytest.fixture(scope="session")
def verifier_data(trustee_vectors: Path) -> Path:
    """``deps/verifier/test_data`` inside the vectors."""
    return trustee_vectors / "deps" / "verifier" / "test_data"


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: whatever we create must be private by itself."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A real PostgreSQL server (tests/storage_servers.py); skips when not installed."""
    from storage_servers import Postgres

    try:
        server = Postgres()
    except FileNotFoundError as exc:
        pytest.skip(f"{exc} not installed")
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real redis-server (tests/storage_servers.py); skips when not installed."""
    from storage_servers import Redis

    try:
        server = Redis(tmp_path_factory.mktemp("redis"))
    except FileNotFoundError as exc:
        pytest.skip(f"{exc} not installed")
    yield server
    server.close()
