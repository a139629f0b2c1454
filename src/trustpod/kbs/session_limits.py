"""What an unauthenticated ``/auth`` may store: the size of its ``extra-params`` and the number
of live sessions (``[trustpod] max_extra_params_bytes``, ``max_sessions``).

Every ``/auth`` writes a session row before the client has proven anything; without bounds,
100 requests with 2 MiB ``extra-params`` grew the store by 190 MB. The request is refused (400)
when its ``extra-params`` serialise to more than ``max_extra_params_bytes``, and a new session is
refused (503, ``kbs.sessions_full``) while ``max_sessions`` are live. The live count comes from
the store (``count(namespace)`` when the backend has it, else the key list) at most once per
``refresh_s`` per process, plus the sessions this process created since; several processes may
overshoot the cap by what they create within one refresh interval. Expired sessions are purged
(and, on SQLite, their pages returned to the filesystem) by ``SessionStore.purge_expired``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from trustpod.errors import DependencyError, EvidenceError
from trustpod.kbs.sessions import NAMESPACE
from trustpod.storage.port import KeyValueStore

__all__ = ["SessionAdmission"]


class SessionAdmission:
    def __init__(
        self,
        store: KeyValueStore,
        *,
        max_sessions: int,
        max_extra_params_bytes: int,
        refresh_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.max_sessions = max_sessions
        self.max_extra_params_bytes = max_extra_params_bytes
        self._refresh_s = refresh_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._count = 0
        self._counted_at: float | None = None

    def check_request(self, extra_params: Any) -> None:
        """Refuse ``extra-params`` larger than ``max_extra_params_bytes`` (serialised JSON)."""
        size = len(json.dumps(extra_params, separators=(",", ":")).encode())
        if size > self.max_extra_params_bytes:
            raise EvidenceError(
                f"extra-params is {size} bytes, more than the {self.max_extra_params_bytes} "
                "an unauthenticated request may store",
                reason="kbs.auth_extra_params",
                fix="send smaller extra-params (KBS setting [trustpod] max_extra_params_bytes)",
            )

    def _live(self) -> int:
        counter = getattr(self._store, "count", None)
        if callable(counter):
            return int(counter(NAMESPACE))
        return len(self._store.list_keys(NAMESPACE))

    def admit(self) -> None:
        """Account for one new session, or ``DependencyError`` (503) when the store is full."""
        now = self._monotonic()
        with self._lock:
            if self._counted_at is None or now - self._counted_at >= self._refresh_s:
                self._count = self._live()
                self._counted_at = now
            if self._count >= self.max_sessions:
                raise DependencyError(
                    f"{self._count} sessions are live, the limit is {self.max_sessions}: "
                    "try again later",
                    reason="kbs.sessions_full",
                    fix="raise [trustpod] max_sessions or lower attestation_service.timeout",
                )
            self._count += 1
