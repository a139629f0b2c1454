"""RCAR sessions in the storage backend (upstream ``kbs/src/attestation/session.rs``, v0.20+).

Stored JSON in namespace ``kbs_protocol_session`` under the session id, upstream's serde shape:
``{"Authed":{"request":{...},"challenge":{...},"id":"...","timeout":"<RFC3339>"}}`` or
``{"Attested":{"token":"<jwt>","id":"...","timeout":"<RFC3339>"}}``. Because nothing lives in
process memory, any KBS process on the same backend can continue a handshake another began.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from trustpod._internal.clock import Clock
from trustpod.errors import AuthenticationError
from trustpod.storage.port import KeyValueStore

__all__ = ["NAMESPACE", "AttestedSession", "AuthedSession", "SessionStore"]

NAMESPACE = "kbs_protocol_session"
_MAX_ID_CHARS = 64


@dataclass(frozen=True, slots=True)
class AuthedSession:
    id: str
    request: dict[str, Any]
    challenge: dict[str, Any]
    expires: dt.datetime

    @property
    def tee(self) -> str:
        return str(self.request.get("tee", ""))

    @property
    def nonce(self) -> str:
        return str(self.challenge.get("nonce", ""))


@dataclass(frozen=True, slots=True)
class AttestedSession:
    id: str
    token: str
    expires: dt.datetime


def _rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _parse_time(text: Any) -> dt.datetime:
    if not isinstance(text, str):
        raise ValueError("timeout")
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


class SessionStore:
    """Create, read (expired sessions are deleted on read) and advance RCAR sessions."""

    def __init__(self, store: KeyValueStore, clock: Clock, timeout_minutes: int) -> None:
        self._store = store
        self._clock = clock
        self.lifetime = dt.timedelta(minutes=timeout_minutes)

    def create(self, request: dict[str, Any], challenge: dict[str, Any]) -> AuthedSession:
        # (1) id = Uuid::new_v4().as_simple(); lifetime counted from /auth.
        sid = uuid.uuid4().hex
        expires = (self._clock.now() + self.lifetime).replace(microsecond=0)
        doc = {
            "Authed": {
                "request": request,
                "challenge": challenge,
                "id": sid,
                "timeout": _rfc3339(expires),
            }
        }
        self._store.put(NAMESPACE, sid, json.dumps(doc, separators=(",", ":")).encode())
        return AuthedSession(sid, request, challenge, expires)

    def get(self, sid: str | None) -> AuthedSession | AttestedSession:
        """The live session, or ``AuthenticationError`` (missing cookie, unknown, expired)."""
        if not sid:
            raise AuthenticationError(
                "no kbs-session-id cookie: call /kbs/v0/auth first",
                reason="kbs.session_missing",
            )
        if len(sid) > _MAX_ID_CHARS or not sid.isalnum():
            raise AuthenticationError("malformed kbs-session-id cookie", reason="kbs.session_bad")
        raw = self._store.get(NAMESPACE, sid)
        if raw is None:
            raise AuthenticationError(
                "session not found (unknown or expired): start again with /kbs/v0/auth",
                reason="kbs.session_unknown",
            )
        try:
            session = self._decode(sid, raw)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._store.delete(NAMESPACE, sid)
            raise AuthenticationError(
                "stored session is corrupt; start again with /kbs/v0/auth",
                reason="kbs.session_corrupt",
            ) from exc
        # (2) get() deletes sessions it finds expired (session.rs).
        if session.expires <= self._clock.now():
            self._store.delete(NAMESPACE, sid)
            raise AuthenticationError(
                "session expired: start again with /kbs/v0/auth", reason="kbs.session_expired"
            )
        return session

    @staticmethod
    def _decode(sid: str, raw: bytes) -> AuthedSession | AttestedSession:
        doc = json.loads(raw)
        if "Authed" in doc:
            a = doc["Authed"]
            if not isinstance(a["request"], dict) or not isinstance(a["challenge"], dict):
                raise ValueError("shape")
            return AuthedSession(sid, a["request"], a["challenge"], _parse_time(a["timeout"]))
        b = doc["Attested"]
        return AttestedSession(sid, str(b["token"]), _parse_time(b["timeout"]))

    def attest(self, session: AuthedSession, token: str) -> AttestedSession:
        """Mark the session attested; it keeps the expiry fixed at /auth (session.rs attest)."""
        doc = {"Attested": {"token": token, "id": session.id, "timeout": _rfc3339(session.expires)}}
        self._store.put(NAMESPACE, session.id, json.dumps(doc, separators=(",", ":")).encode())
        return AttestedSession(session.id, token, session.expires)

    def purge_expired(self) -> int:
        """Delete every expired session (upstream runs this every 60 s); returns the count."""
        removed = 0
        now = self._clock.now()
        for sid in self._store.list_keys(NAMESPACE):
            raw = self._store.get(NAMESPACE, sid)
            try:
                expired = raw is None or self._decode(sid, raw).expires <= now
            except (ValueError, KeyError, TypeError, AttributeError):
                expired = True
            if expired and self._store.delete(NAMESPACE, sid):
                removed += 1
        reclaim = getattr(self._store, "reclaim", None)  # SQLite: give freed pages back
        if removed and callable(reclaim):
            reclaim()
        return removed
