"""RoutedStore keeps the main store's extras (count, reclaim) when resources go elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustpod.errors import DependencyError
from trustpod.kbs.session_limits import SessionAdmission
from trustpod.kbs.sessions import NAMESPACE
from trustpod.storage.memory import MemoryStore
from trustpod.storage.routed import RoutedStore
from trustpod.storage.sqlite import SqliteStore


class _Counting(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.counted: list[str] = []
        self.reclaimed = 0

    def count(self, namespace: str) -> int:
        self.counted.append(namespace)
        return len(self.list_keys(namespace))

    def reclaim(self) -> None:
        self.reclaimed += 1


def test_count_and_reclaim_go_to_the_store_holding_the_namespace() -> None:
    main, vault = _Counting(), MemoryStore()  # the Vault/AKV stand-in has neither extra
    routed = RoutedStore(main, {"repository": vault})
    main.put(NAMESPACE, "s1", b"x")
    vault.put("repository", "a/b/c", b"secret")
    assert routed.count(NAMESPACE) == 1 and main.counted == [NAMESPACE]
    assert routed.count("repository") == 1  # no count(): the key list's length
    routed.reclaim()
    assert main.reclaimed == 1


def test_session_cap_holds_with_a_resource_backend(tmp_path: Path) -> None:
    main = SqliteStore(tmp_path / "kbs.sqlite")
    routed = RoutedStore(main, {"repository": MemoryStore()})
    try:
        limits = SessionAdmission(routed, max_sessions=2, max_extra_params_bytes=4096, refresh_s=0)
        for sid in ("a", "b"):
            limits.admit()
            routed.put(NAMESPACE, sid, b"{}")
        with pytest.raises(DependencyError) as exc:
            limits.admit()
        assert exc.value.reason == "kbs.sessions_full"
        routed.reclaim()  # SQLite's incremental vacuum runs through the router
    finally:
        routed.close()
