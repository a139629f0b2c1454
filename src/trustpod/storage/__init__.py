"""Key-value storage port and backends (SQLite embedded default; memory for tests)."""

from trustpod.storage.port import NAMESPACES, KeyValueStore

__all__ = ["NAMESPACES", "KeyValueStore"]
