"""Issue 12, security defects 1 and 7: the store and the keys are private, resources are
encrypted at rest under a key kept outside the database, a wrong key refuses to start."""

from __future__ import annotations

import base64
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.errors import ConfigError, DependencyError, VerificationError
from trustpod.kbs.config import load_config
from trustpod.kbs.init_dir import init_kbs_dir
from trustpod.kbs.wiring import build_core
from trustpod.storage.at_rest import (
    CHECK_KEY,
    EncryptedStore,
    generate_key_file,
    load_local_kek,
)
from trustpod.storage.envelope import Envelope, LocalKek, open_value, seal_value
from trustpod.storage.memory import MemoryStore
from trustpod.storage.sqlite import SqliteStore

SECRET = b"the-secret-value-0123456789"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_sqlite_files_private_under_open_umask(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "state" / "kbs.sqlite"
    store = SqliteStore(db)
    store.put("repository", "a/b/c", SECRET)
    assert _mode(db.parent) == 0o700
    files = sorted(p.name for p in db.parent.iterdir())
    assert files == ["kbs.sqlite", "kbs.sqlite-shm", "kbs.sqlite-wal"]
    for name in files:
        assert _mode(db.parent / name) == 0o600, name
    store.close()


def test_envelope_roundtrip_and_binding() -> None:
    kek = LocalKek(os.urandom(32))
    raw = seal_value(kek, "repository", "default/key/1", SECRET)
    assert SECRET not in raw
    assert open_value(kek, "repository", "default/key/1", raw) == SECRET
    # AAD binds the path: the same bytes under another resource path do not decrypt
    with pytest.raises(VerificationError):
        open_value(kek, "repository", "default/key/2", raw)
    with pytest.raises(VerificationError):
        open_value(kek, "trustpod_keys", "default/key/1", raw)
    # every byte flip is rejected
    for i in range(len(raw)):
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        with pytest.raises(VerificationError):
            open_value(kek, "repository", "default/key/1", bytes(flipped))
    env = Envelope.parse(raw)
    assert env.kek_id == kek.key_id and len(env.nonce) == 12
    with pytest.raises(VerificationError, match=r"another|KEK"):
        open_value(LocalKek(os.urandom(32)), "repository", "default/key/1", raw)


_KEK = LocalKek(bytes(range(32)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=64), st.text(max_size=40))
def test_envelope_parser_only_raises_verification_error(
    junk: bytes, plaintext: bytes, key: str
) -> None:
    for raw in (junk, b"TPAR\x01" + junk):
        try:
            open_value(_KEK, "repository", key, raw)
        except VerificationError:
            pass
    sealed = seal_value(_KEK, "repository", key, plaintext)
    assert open_value(_KEK, "repository", key, sealed) == plaintext
    assert Envelope.parse(sealed).to_bytes() == sealed


def test_values_encrypted_in_the_file_and_wrong_key_refuses(tmp_path: Path) -> None:
    db = tmp_path / "kbs.sqlite"
    kek = LocalKek(os.urandom(32))
    store = EncryptedStore(SqliteStore(db), kek)
    store.put("repository", "default/key/1", SECRET)
    store.put("kbs_protocol_session", "s1", b"{}")  # not an encrypted namespace
    assert store.get("repository", "default/key/1") == SECRET
    assert store.list_keys("trustpod_keys") == []  # the key-check record is hidden
    store.close()
    with sqlite3.connect(db) as conn:
        values = [bytes(r[0]) for r in conn.execute("select value from kv")]
    assert values and not any(SECRET in v for v in values)
    with pytest.raises(ConfigError, match="another at-rest key") as info:
        EncryptedStore(SqliteStore(db), LocalKek(os.urandom(32)))
    assert info.value.reason == "storage.at_rest.wrong_key"
    assert info.value.fix is not None and "at_rest_key_file" in info.value.fix
    # the right key opens it again
    again = EncryptedStore(SqliteStore(db), kek)
    assert again.get("repository", "default/key/1") == SECRET
    again.close()


def test_migration_encrypts_plain_values_then_refuses_plain(tmp_path: Path) -> None:
    inner = MemoryStore()
    inner.put("repository", "default/key/1", SECRET)
    inner.put("trustpod_keys", "signer", b"PEM")
    kek = LocalKek(os.urandom(32))
    store = EncryptedStore(inner, kek)
    assert store.get("repository", "default/key/1") == SECRET
    assert store.get("trustpod_keys", "signer") == b"PEM"
    assert SECRET not in (inner.get("repository", "default/key/1") or b"")
    assert inner.get("trustpod_keys", CHECK_KEY) is not None
    # once the store is encrypted, a plain value planted in the database is refused
    inner.put("repository", "default/key/2", b"planted")
    with pytest.raises(DependencyError) as info:
        store.get("repository", "default/key/2")
    assert info.value.reason == "storage.at_rest.plaintext"
    # a value moved to another path is refused too (AAD)
    inner.put("repository", "default/key/3", inner.get("repository", "default/key/1") or b"")
    with pytest.raises(DependencyError):
        store.get("repository", "default/key/3")


def test_kek_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "kek"
    generate_key_file(key_file)
    assert _mode(key_file) == 0o600
    a = load_local_kek(key_file=key_file, key_env=None)
    assert a is not None
    monkeypatch.setenv("TP_TEST_KEK", key_file.read_text())
    b = load_local_kek(key_file=None, key_env="TP_TEST_KEK")
    assert b is not None and a.key_id == b.key_id
    assert load_local_kek(key_file=None, key_env=None) is None
    with pytest.raises(ConfigError, match="not set"):
        load_local_kek(key_file=None, key_env="TP_TEST_KEK_UNSET")
    monkeypatch.setenv("TP_TEST_KEK", base64.b64encode(b"short").decode())
    with pytest.raises(ConfigError, match="32-byte"):
        load_local_kek(key_file=None, key_env="TP_TEST_KEK")
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        load_local_kek(key_file=key_file, key_env=None)
    with pytest.raises(ConfigError):
        load_local_kek(key_file=key_file, key_env="TP_TEST_KEK")


def test_kbs_init_creates_every_secret_0600(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # written-then-chmod-ed files were readable in between: no chmod may be needed at all
    def no_chmod(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"chmod called: {args}")

    monkeypatch.setattr(os, "chmod", no_chmod)
    d = tmp_path / "kbs"
    res = init_kbs_dir(d, "127.0.0.1:8443")
    assert _mode(d) == 0o700
    for name in ("kbs-key.pem", "token-key.pem", "admin-key.pem", "admin-token", "at-rest.key"):
        if (d / name).exists():
            assert _mode(d / name) == 0o600, name
    assert (d / "at-rest.key").exists() and (d / "admin-key.pem").exists()
    cfg = load_config(res.config)
    assert cfg.trustpod.at_rest_key_file == d / "at-rest.key"
    # --force keeps the KEK: it decrypts the existing store
    before = (d / "at-rest.key").read_bytes()
    init_kbs_dir(d, "127.0.0.1:8443", force=True)
    assert (d / "at-rest.key").read_bytes() == before
    for name in ("kbs-key.pem", "admin-key.pem", "admin-token"):
        assert _mode(d / name) == 0o600, name


def test_kbs_init_store_encrypted_and_wrong_key_refuses_to_start(tmp_path: Path) -> None:
    d = tmp_path / "kbs"
    res = init_kbs_dir(d, "127.0.0.1:8443", insecure_http=True)
    cfg = load_config(res.config)
    core, _ = build_core(cfg)
    core.set_resource("default/key/1", SECRET)
    core.store.close()
    stored = b"".join(p.read_bytes() for p in d.glob("kbs.sqlite*"))
    assert b"SQLite format" in stored and SECRET not in stored
    (d / "at-rest.key").unlink()
    generate_key_file(d / "at-rest.key")
    r = subprocess.run(
        [sys.executable, "-m", "trustpod.cli", "kbs", "serve", "--config", str(res.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert "another at-rest key" in r.stderr and "refusing to start" in r.stderr
    assert "Traceback" not in r.stderr
