"""The reference value provider service over the storage port (upstream ``rvps``, BuiltIn).

Values live in namespace ``reference_value`` under their name, as upstream's ``ReferenceValue``
JSON. Divergence (docs/compat.md): expired values are NOT served (fail closed); upstream serves
them. ``serve_expired=True`` restores upstream's behaviour.

Speed: ``all_values`` (read by every attestation) keeps what it read for ``reload_s`` seconds,
like the resource policy: a value registered or deleted through this process applies at once,
one registered through another process on the same storage within ``reload_s``. Records are
parsed once per stored encoding; expiry is still checked against the clock on every call.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from trustpod._internal.clock import Clock
from trustpod.errors import EvidenceError
from trustpod.rvps.message import VALIDITY_MONTHS, ReferenceValue, parse_message
from trustpod.storage.port import KeyValueStore

__all__ = ["NAMESPACE", "RELOAD_S", "ReferenceValueStore"]

NAMESPACE = "reference_value"
#: How long ``all_values`` reuses what it read from storage (seconds).
RELOAD_S = 1.0
#: Parsed records kept by stored encoding (cleared when full).
_PARSED_ENTRIES = 4096
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
        reload_s: float = RELOAD_S,
    ) -> None:
        self._store = store
        self._clock = clock
        self._months = validity_months
        self._serve_expired = serve_expired
        self._reload_s = reload_s
        self._parsed: dict[bytes, ReferenceValue] = {}
        self._records: dict[str, ReferenceValue | None] = {}
        self._loaded_at: float | None = None

    def register(self, message: Any) -> list[str]:
        """Store every value of a register message; returns the names written."""
        records = parse_message(message, self._clock.now(), validity_months=self._months)
        for rec in records:
            self._store.put(NAMESPACE, rec.name, rec.to_json())
        self._loaded_at = None  # this process sees its own writes at once
        _log.info("registered %d reference value(s)", len(records))
        return [r.name for r in records]

    def record(self, name: str) -> ReferenceValue | None:
        """The full stored record (with its expiration), expired or not."""
        raw = self._store.get(NAMESPACE, name)
        return None if raw is None else self._parse(raw)

    def _parse(self, raw: bytes) -> ReferenceValue:
        rec = self._parsed.get(raw)
        if rec is None:
            rec = ReferenceValue.from_json(raw)
            if len(self._parsed) >= _PARSED_ENTRIES:
                self._parsed.clear()
            self._parsed[raw] = rec
        return rec

    def query(self, name: str) -> Any | None:
        """The value, or ``None`` when absent or expired (unless ``serve_expired``)."""
        try:
            rec = self.record(name)
        except EvidenceError:
            _log.warning("reference value %r is corrupt; not served", name[:128])
            return None
        return self._servable(name, rec)

    def _servable(self, name: str, rec: ReferenceValue | None) -> Any | None:
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
        self._loaded_at = None
        return self._store.delete(NAMESPACE, name)

    def all_values(self) -> dict[str, Any]:
        """``{name: value}`` of every servable value (injected as ``data.reference``)."""
        now = time.monotonic()
        if self._loaded_at is None or now - self._loaded_at >= self._reload_s:
            records: dict[str, ReferenceValue | None] = {}
            for name in self._store.list_keys(NAMESPACE):
                try:
                    records[name] = self.record(name)
                except EvidenceError:
                    _log.warning("reference value %r is corrupt; not served", name[:128])
                    records[name] = None
            self._records, self._loaded_at = records, now
        out: dict[str, Any] = {}
        for name, rec in self._records.items():
            value = self._servable(name, rec)
            if value is not None:
                out[name] = value
        return out
