"""Redis backend of the storage port (upstream's key layout: ``<namespace>:<key>``, no TTL).

Lets several KBS hosts share sessions, resources and policies (upstream's valkey-sessions
scenario). ``put(..., overwrite=False)`` is ``SET NX``; ``list_keys`` uses ``SCAN`` (upstream uses
``KEYS``, which blocks the server on large databases). Failures become ``DependencyError``.
"""

from __future__ import annotations

from typing import Any

from trustpod.errors import ConfigError, DependencyError
from trustpod.storage.port import NAMESPACES

__all__ = ["RedisStore"]


class RedisStore:
    """``KeyValueStore`` over one Redis/Valkey database (``redis://host:port/db``)."""

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        import redis

        self._redis_mod: Any = redis
        self.url = url
        try:
            self._r: Any = redis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
            self._r.ping()
        except (redis.RedisError, ValueError) as exc:
            raise DependencyError(
                f"cannot connect to Redis at {url}: {exc}",
                reason="storage.redis.connect",
                fix="check [storage_backend.backends.redis] url (or REDIS_URL) and that Redis runs",
            ) from exc

    @staticmethod
    def _key(namespace: str, key: str) -> str:
        if namespace not in NAMESPACES:
            raise ConfigError(
                f"unknown storage namespace {namespace!r}", reason="storage.namespace"
            )
        return f"{namespace}:{key}"

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._redis_mod.RedisError as exc:
            raise DependencyError(
                f"Redis {what} failed: {exc}", reason=f"storage.redis.{what}"
            ) from exc

    def get(self, namespace: str, key: str) -> bytes | None:
        value = self._call("read", self._r.get, self._key(namespace, key))
        return None if value is None else bytes(value)

    def put(self, namespace: str, key: str, value: bytes, *, overwrite: bool = True) -> bool:
        ok = self._call(
            "write", self._r.set, self._key(namespace, key), bytes(value), nx=not overwrite
        )
        return bool(ok)

    def delete(self, namespace: str, key: str) -> bool:
        return bool(self._call("delete", self._r.delete, self._key(namespace, key)))

    def list_keys(self, namespace: str) -> list[str]:
        prefix = self._key(namespace, "")
        keys = self._call("list", lambda: list(self._r.scan_iter(match=f"{prefix}*", count=500)))
        return sorted(k.decode()[len(prefix) :] for k in keys)

    def close(self) -> None:
        try:
            self._r.close()
        except self._redis_mod.RedisError:  # pragma: no cover - best effort
            pass
