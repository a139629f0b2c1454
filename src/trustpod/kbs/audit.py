"""Explainable denials: every refused request is recorded under its request id.

The client sees a short detail and the request id; the reason (policy rule, claim, failed check)
is logged at INFO (no secrets, no tokens, no evidence) and stored in namespace
``trustpod_audit``, where admins read it with ``GET /kbs/v0/trustpod/explain/<request-id>`` or
``trustpod admin explain <request-id>``. The namespace is pruned to ``audit_max_entries``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from trustpod._internal.clock import Clock
from trustpod.errors import NotFoundError
from trustpod.kbs.logsetup import escape_control
from trustpod.storage.port import KeyValueStore

__all__ = ["NAMESPACE", "AuditLog"]

NAMESPACE = "trustpod_audit"
_PRUNE_EVERY = 256
_log = logging.getLogger("trustpod.kbs.audit")


class AuditLog:
    def __init__(self, store: KeyValueStore, clock: Clock, max_entries: int) -> None:
        self._store = store
        self._clock = clock
        self._max = max_entries
        self._writes = 0

    def record(self, request_id: str, entry: Mapping[str, Any]) -> None:
        doc = {"request_id": request_id, "time": self._clock.now().isoformat(), **entry}
        _log.info(
            "denied request %s: %s %s -> %s (%s) %s",
            request_id,
            entry.get("method"),
            escape_control(str(entry.get("path"))),  # client-controlled: no raw controls
            entry.get("status"),
            entry.get("reason"),
            entry.get("explain") or "",
        )
        try:
            key = f"{doc['time']}~{request_id}"
            self._store.put(NAMESPACE, key, json.dumps(doc, default=str).encode())
            self._writes += 1
            if self._writes % _PRUNE_EVERY == 0:
                self._prune()
        except Exception:  # audit must never turn a clean 4xx into a 500
            _log.exception("could not store the audit record for %s", request_id)

    def _prune(self) -> None:
        keys = self._store.list_keys(NAMESPACE)  # sorted: oldest first (ISO time prefix)
        for key in keys[: max(0, len(keys) - self._max)]:
            self._store.delete(NAMESPACE, key)

    def explain(self, request_id: str) -> dict[str, Any]:
        for key in reversed(self._store.list_keys(NAMESPACE)):
            if key.endswith("~" + request_id):
                raw = self._store.get(NAMESPACE, key)
                if raw is not None:
                    doc: dict[str, Any] = json.loads(raw)
                    return doc
        raise NotFoundError(
            f"no denial recorded with request id {request_id[:64]!r}",
            reason="kbs.audit_unknown",
            fix="use the request id from the x-request-id header or the error detail",
        )
