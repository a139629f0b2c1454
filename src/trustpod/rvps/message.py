"""RVPS register messages and stored reference-value records (pure; protocol §4.4).

Message: ``{"version": "0.1.0", "type": "sample", "payload": "<std base64 of {name: value}>"}``.
Each ``name`` becomes a record ``{"version": "0.1.0", "name", "expiration", "value"}`` with
``expiration`` = registration time + 12 months in ``%Y-%m-%dT%H:%M:%SZ`` (upstream
``rvps/src/reference_value.rs``). Only the ``sample`` extractor is implemented.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from typing import Any

from trustpod._internal.b64 import b64_decode
from trustpod.errors import EvidenceError

__all__ = [
    "EXPIRATION_FORMAT",
    "MAX_PAYLOAD_CHARS",
    "MESSAGE_VERSION",
    "VALIDITY_MONTHS",
    "ReferenceValue",
    "add_months",
    "parse_message",
]

MESSAGE_VERSION = "0.1.0"
EXPIRATION_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
#: Default validity of a registered value (upstream: 12 months).
VALIDITY_MONTHS = 12
#: Upper bound on the base64 payload of one message.
MAX_PAYLOAD_CHARS = 1024 * 1024
#: Upper bound on a reference-value name.
MAX_NAME_CHARS = 256


def add_months(when: _dt.datetime, months: int) -> _dt.datetime:
    """Calendar month arithmetic, clamping the day (Jan 31 + 1 month = Feb 28/29)."""
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    for day in (when.day, 30, 29, 28):
        try:
            return when.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise ValueError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """One stored reference value."""

    name: str
    value: Any
    expiration: _dt.datetime
    version: str = MESSAGE_VERSION

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "version": self.version,
                "name": self.name,
                "expiration": self.expiration.strftime(EXPIRATION_FORMAT),
                "value": self.value,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ReferenceValue:
        try:
            doc = json.loads(raw)
            exp = _dt.datetime.strptime(doc["expiration"], EXPIRATION_FORMAT)
            return cls(
                name=str(doc["name"]),
                value=doc["value"],
                expiration=exp.replace(tzinfo=_dt.UTC),
                version=str(doc.get("version", MESSAGE_VERSION)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise EvidenceError("stored reference value is corrupt", reason="rvps.corrupt") from exc

    def expired(self, now: _dt.datetime) -> bool:
        """Upstream ``ReferenceValue::expired``: ``now > expiration``."""
        return now > self.expiration


def parse_message(
    message: Any, now: _dt.datetime, *, validity_months: int = VALIDITY_MONTHS
) -> list[ReferenceValue]:
    """Parse a register message into records; raises ``EvidenceError`` naming the problem."""
    # (1) Envelope: object with version "0.1.0" (serde default when absent), a known type and a
    # string payload.
    if not isinstance(message, dict):
        raise EvidenceError("RVPS message must be a JSON object", reason="rvps.message")
    if message.get("version", MESSAGE_VERSION) != MESSAGE_VERSION:
        raise EvidenceError(
            f"RVPS message version must be {MESSAGE_VERSION!r}", reason="rvps.version"
        )
    kind = message.get("type")
    if kind != "sample":
        raise EvidenceError(
            f"RVPS message type {str(kind)[:32]!r} is not supported (only 'sample')",
            reason="rvps.type",
            fix="register values with type 'sample' (kbs-client set-sample-reference-value)",
        )
    payload = message.get("payload")
    if not isinstance(payload, str):
        raise EvidenceError("RVPS message needs a payload string", reason="rvps.message")
    if len(payload) > MAX_PAYLOAD_CHARS:
        raise EvidenceError("RVPS payload too large", reason="rvps.too_large")
    # (2) sample extractor: std base64 of a JSON object {name: value}.
    raw = b64_decode(payload, field="RVPS payload")
    try:
        values = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvidenceError("RVPS sample payload is not JSON", reason="rvps.payload") from exc
    if not isinstance(values, dict):
        raise EvidenceError("RVPS sample payload must be a JSON object", reason="rvps.payload")
    expiration = add_months(now.replace(microsecond=0), validity_months)
    out: list[ReferenceValue] = []
    for name, value in values.items():
        if not name or len(name) > MAX_NAME_CHARS:
            raise EvidenceError(
                "RVPS reference value name is empty or too long", reason="rvps.name"
            )
        out.append(ReferenceValue(name=name, value=value, expiration=expiration))
    return out
