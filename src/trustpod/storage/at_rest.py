"""Encryption at rest for any ``KeyValueStore`` (ADR 0302).

``EncryptedStore`` wraps a backend: values in ``ENCRYPTED_NAMESPACES`` (resources and the token
signer key) are sealed with ``trustpod.storage.envelope`` on ``put`` and opened on ``get``; other
namespaces pass through. Opening checks a key-check record (namespace ``trustpod_keys``, key
``at-rest-check``): a store opened with another KEK refuses to start with ``ConfigError``
instead of failing later on every read.

Migration (docs/compat.md): the first time a store is opened with a KEK (no key-check record
yet) its plain values in the encrypted namespaces are encrypted in place, then the record is
written. After that a plain value in those namespaces is refused on read (fail closed: writing
into the database file must not be a way to plant a secret or a signer key).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
import threading
from collections import OrderedDict
from pathlib import Path

from trustpod.errors import ConfigError, DependencyError, VerificationError
from trustpod.storage.envelope import (
    KEK_BYTES,
    Envelope,
    KekProvider,
    LocalKek,
    aad_for,
    is_envelope,
    open_envelope,
    open_value,
    seal_value,
)
from trustpod.storage.port import KeyValueStore

__all__ = [
    "CHECK_KEY",
    "ENCRYPTED_NAMESPACES",
    "EncryptedStore",
    "generate_key_file",
    "load_local_kek",
]

ENCRYPTED_NAMESPACES = frozenset({"repository", "trustpod_keys"})
CHECK_NAMESPACE = "trustpod_keys"
CHECK_KEY = "at-rest-check"
_CHECK_PLAINTEXT = b"trustpod at-rest key check v1"
_DEK_CACHE = 1024
_log = logging.getLogger(__name__)


def generate_key_file(path: Path) -> None:
    """Write a new random KEK to ``path``, created 0600 (fails when the file exists)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64encode(os.urandom(KEK_BYTES)) + b"\n")


def _decode_key(text: bytes, where: str) -> bytes:
    raw = text.strip()
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEK_BYTES:
        raise ConfigError(
            f"{where} does not hold a base64-encoded {KEK_BYTES}-byte key",
            reason="storage.at_rest.key_format",
            fix="generate one with `head -c 32 /dev/urandom | base64 > FILE` (mode 0600)",
        )
    return key


def load_local_kek(*, key_file: Path | None, key_env: str | None) -> LocalKek | None:
    """The KEK from ``[trustpod] at_rest_key_file`` or ``at_rest_key_env`` (None: neither set).

    A key file readable by group or others is refused (it protects every stored secret)."""
    if key_file is not None and key_env is not None:
        raise ConfigError(
            "set only one of [trustpod] at_rest_key_file and at_rest_key_env",
            reason="config.at_rest",
        )
    if key_env is not None:
        value = os.environ.get(key_env)
        if not value:
            raise ConfigError(
                f"[trustpod] at_rest_key_env names ${key_env}, which is not set",
                reason="storage.at_rest.key_missing",
                fix=f"export {key_env} with the base64 key this store was created with",
            )
        return LocalKek(_decode_key(value.encode(), f"${key_env}"))
    if key_file is None:
        return None
    try:
        fd = os.open(key_file, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the at-rest key {key_file}: {exc.strerror}",
            reason="storage.at_rest.key_missing",
            fix="point [trustpod] at_rest_key_file at the key this store was created with",
        ) from exc
    with os.fdopen(fd, "rb") as f:
        if stat.S_IMODE(os.fstat(f.fileno()).st_mode) & 0o077:
            raise ConfigError(
                f"the at-rest key {key_file} is readable by other users",
                reason="storage.at_rest.key_mode",
                fix=f"chmod 600 {key_file}",
            )
        return LocalKek(_decode_key(f.read(), str(key_file)))


class EncryptedStore:
    """``KeyValueStore`` that encrypts ``ENCRYPTED_NAMESPACES`` under ``kek`` (see module doc)."""

    def __init__(self, inner: KeyValueStore, kek: KekProvider) -> None:
        self.inner = inner
        self.kek = kek
        self._deks: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._check_or_migrate()

    # -- opening -------------------------------------------------------------------------------
    def _check_or_migrate(self) -> None:
        raw = self.inner.get(CHECK_NAMESPACE, CHECK_KEY)
        if raw is None:
            migrated = self._migrate()
            if migrated:
                _log.warning("at-rest encryption: encrypted %d existing plain value(s)", migrated)
            sealed = seal_value(self.kek, CHECK_NAMESPACE, CHECK_KEY, _CHECK_PLAINTEXT)
            self.inner.put(CHECK_NAMESPACE, CHECK_KEY, sealed, overwrite=False)
            raw = self.inner.get(CHECK_NAMESPACE, CHECK_KEY)  # another replica may have won
            assert raw is not None
        try:
            ok = open_value(self.kek, CHECK_NAMESPACE, CHECK_KEY, raw) == _CHECK_PLAINTEXT
        except VerificationError as exc:
            found = Envelope.parse(raw).kek_id if is_envelope(raw) else "unknown"
            raise ConfigError(
                f"the storage was encrypted with another at-rest key (KEK {found}; "
                f"configured: {self.kek.key_id}): refusing to start",
                reason="storage.at_rest.wrong_key",
                fix="set [trustpod] at_rest_key_file / at_rest_key_env to the key this store "
                "was created with (every replica on one store needs the same key)",
            ) from exc
        if not ok:  # pragma: no cover - a valid tag over other text needs the key
            raise ConfigError("at-rest key-check record mismatch", reason="storage.at_rest.check")

    def _migrate(self) -> int:
        count = 0
        for ns in sorted(ENCRYPTED_NAMESPACES):
            for key in self.inner.list_keys(ns):
                value = self.inner.get(ns, key)
                if value is None or is_envelope(value) or (ns, key) == (CHECK_NAMESPACE, CHECK_KEY):
                    continue
                self.inner.put(ns, key, seal_value(self.kek, ns, key, value))
                count += 1
        return count

    # -- data keys -----------------------------------------------------------------------------
    def _open(self, namespace: str, key: str, raw: bytes) -> bytes:
        if not is_envelope(raw):
            raise DependencyError(
                f"plain value in encrypted namespace {namespace} ({key[:128]}): refused",
                reason="storage.at_rest.plaintext",
                fix="write it again through the KBS admin API (it is then encrypted)",
            )
        env = Envelope.parse(raw)
        with self._lock:
            dek = self._deks.get(env.wrapped_dek)
        if dek is None:
            if env.kek_id != self.kek.key_id:
                return open_envelope(self.kek, namespace, key, env)  # raises wrong_key
            dek = self.kek.unwrap(env.wrapped_dek, aad_for(namespace, key))
            with self._lock:
                self._deks[env.wrapped_dek] = dek
                if len(self._deks) > _DEK_CACHE:
                    self._deks.popitem(last=False)
        return open_envelope(self.kek, namespace, key, env, dek=dek)

    # -- KeyValueStore -------------------------------------------------------------------------
    def get(self, namespace: str, key: str) -> bytes | None:
        raw = self.inner.get(namespace, key)
        if raw is None or namespace not in ENCRYPTED_NAMESPACES:
            return raw
        try:
            return self._open(namespace, key, raw)
        except VerificationError as exc:
            raise DependencyError(
                f"stored value {namespace}/{key[:128]} cannot be decrypted: {exc.message}",
                reason=exc.reason,
                fix="check [trustpod] at_rest_key_file; restore the value from a backup",
            ) from exc

    def put(self, namespace: str, key: str, value: bytes, *, overwrite: bool = True) -> bool:
        if namespace in ENCRYPTED_NAMESPACES:
            value = seal_value(self.kek, namespace, key, bytes(value))
        return self.inner.put(namespace, key, value, overwrite=overwrite)

    def delete(self, namespace: str, key: str) -> bool:
        return self.inner.delete(namespace, key)

    def list_keys(self, namespace: str) -> list[str]:
        keys = self.inner.list_keys(namespace)
        if namespace == CHECK_NAMESPACE:
            return [k for k in keys if k != CHECK_KEY]
        return keys

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> object:
        # optional backend extras (e.g. SqliteStore.count) stay reachable through the wrapper
        if name == "inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)
