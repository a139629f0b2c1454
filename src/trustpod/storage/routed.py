"""A ``KeyValueStore`` that sends some namespaces to other stores: resources (``repository``) to
HashiCorp Vault or Azure Key Vault while sessions, policies and keys stay in the main store."""

from __future__ import annotations

from collections.abc import Mapping

from trustpod.storage.port import KeyValueStore

__all__ = ["RoutedStore"]


class RoutedStore:
    """``routes[namespace]`` for the namespaces it names, ``default`` for the rest."""

    def __init__(self, default: KeyValueStore, routes: Mapping[str, KeyValueStore]) -> None:
        self.default = default
        self.routes = dict(routes)

    def _for(self, namespace: str) -> KeyValueStore:
        return self.routes.get(namespace, self.default)

    def get(self, namespace: str, key: str) -> bytes | None:
        return self._for(namespace).get(namespace, key)

    def put(self, namespace: str, key: str, value: bytes, *, overwrite: bool = True) -> bool:
        return self._for(namespace).put(namespace, key, value, overwrite=overwrite)

    def delete(self, namespace: str, key: str) -> bool:
        return self._for(namespace).delete(namespace, key)

    def list_keys(self, namespace: str) -> list[str]:
        return self._for(namespace).list_keys(namespace)

    def count(self, namespace: str) -> int:
        """Keys in ``namespace``: the routed store's own ``count`` when it has one (SQLite counts
        in SQL), else its key list's length. The session cap counts through this."""
        store = self._for(namespace)
        counter = getattr(store, "count", None)
        if callable(counter):
            return int(counter(namespace))
        return len(store.list_keys(namespace))

    def reclaim(self) -> None:
        """Give freed space back on every store that can (SQLite's incremental vacuum)."""
        for store in self._distinct():
            reclaim = getattr(store, "reclaim", None)
            if callable(reclaim):
                reclaim()

    def _distinct(self) -> list[KeyValueStore]:
        return list({id(s): s for s in (self.default, *self.routes.values())}.values())

    def close(self) -> None:
        for store in self._distinct():
            store.close()
