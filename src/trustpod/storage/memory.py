"""In-process storage (tests, and upstream's ``Memory`` type). Not shared between processes."""

from __future__ import annotations

import threading

from trustpod.errors import ConfigError
from trustpod.storage.port import NAMESPACES

__all__ = ["MemoryStore"]


class MemoryStore:
    """A thread-safe dict-of-dicts implementing ``KeyValueStore``."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, bytes]] = {ns: {} for ns in NAMESPACES}
        self._lock = threading.Lock()

    def _ns(self, namespace: str) -> dict[str, bytes]:
        try:
            return self._data[namespace]
        except KeyError:
            raise ConfigError(
                f"unknown storage namespace {namespace!r}", reason="storage.namespace"
            ) from None

    def get(self, namespace: str, key: str) -> bytes | None:
        with self._lock:
            return self._ns(namespace).get(key)

    def put(self, namespace: str, key: str, value: bytes, *, overwrite: bool = True) -> bool:
        with self._lock:
            ns = self._ns(namespace)
            if not overwrite and key in ns:
                return False
            ns[key] = bytes(value)
            return True

    def delete(self, namespace: str, key: str) -> bool:
        with self._lock:
            return self._ns(namespace).pop(key, None) is not None

    def list_keys(self, namespace: str) -> list[str]:
        with self._lock:
            return sorted(self._ns(namespace))

    def close(self) -> None:
        return None
