"""The reference value provider service over the storage port (upstream ``rvps``, BuiltIn).

Values live in namespace ``reference_value`` under their name, as upstream's ``ReferenceValue``
JSON. Divergence (docs/compat.md): expired values are NOT served (fail closed); upstream serves
them. ``serve_expired=True`` restores upstream's behaviour.
"""

from __future__ import annotations

import logging
from typing import Any

from trustpod._internal.clock import Clock
from trustpod.errors import EvidenceError
from trustpod.rvps.message import VALIDITY_MONTHS, ReferenceValue, parse_message
from trustpod.storage.port import KeyValueStore

__all__ = ["NAMESPACE", "ReferenceValueStore"]

NAMESPACE = "reference_value"
_log = logging.getLogger(__name__)


class ReferenceValueStore:
    """Register, query and enumerate reference values."""

    def __init__(
        self,
        store: KeyValueStore,
        clock: Clock,
        *,
        validity_months: int = VALIDITY_MONTHS,
        serve_expired: bool = False,
    ) -> None:
        self._store = store
        self._clock = clock
        self._months = validity_months
        self._serve_expired = serve_expired

    def register(self, message: Any) -> list[str]:
        """Store every value of a register message; returns the names written."""
        records = parse_message(message, self._clock.now(), validity_months=self._months)
        for rec in records:
            self._store.put(NAMESPACE, rec.name, rec.to_json())
        _log.info("registered %d reference value(s)", len(records))
        return [r.name for r in records]

    def record(self, name: str) -> ReferenceValue | None:
        """The full stored record (with its expiration), expired or not."""
        raw = self._store.get(NAMESPACE, name)
        return None if raw is None else ReferenceValue.from_json(raw)

    def query(self, name: str) -> Any | None:
        """The value, or ``None`` when absent or expired (unless ``serve_expired``)."""
        try:
            rec = self.record(name)
        except EvidenceError:
            _log.warning("reference value %r is corrupt; not served", name[:128])
            return None
        if rec is None:
            return None
        if rec.expired(self._clock.now()) and not self._serve_expired:
            _log.warning(
                "reference value %r expired at %s; not served",
                name[:128],
                rec.expiration.isoformat(),
            )
            return None
        return rec.value

    def delete(self, name: str) -> bool:
        return self._store.delete(NAMESPACE, name)

    def all_values(self) -> dict[str, Any]:
        """``{name: value}`` of every servable value (injected as ``data.reference``)."""
        out: dict[str, Any] = {}
        for name in self._store.list_keys(NAMESPACE):
            value = self.query(name)
            if value is not None:
                out[name] = value
        return out
