"""Sealed-secret payloads: ``vault`` and ``envelope`` (pure; guest-and-control-plane.md §3.3).

Payload JSON = upstream ``Secret { version, #[serde(flatten)] type }``: ``version`` must be
``"0.1.0"``; ``provider_settings`` and ``annotations`` are JSON objects and must be present.
Unknown members are ignored, like serde does upstream (the payload is signed, so they are
harmless).

* ``vault``: ``name`` (a ``kbs:///`` URI for provider ``kbs``), ``provider``.
* ``envelope``: ``key_id``, ``encrypted_key``, ``encrypted_data``, ``wrap_type``, ``iv`` (standard
  base64), ``provider``. Upstream has no ``kbs`` envelope provider; trustpod's ``kbs`` provider
  (``trustpod.sealed.envelope``) is an extension documented in docs/compat.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trustpod._internal.b64 import b64_decode, b64_encode
from trustpod.errors import EvidenceError

__all__ = [
    "SECRET_VERSION",
    "EnvelopeSecret",
    "SecretPayload",
    "VaultSecret",
    "parse_payload",
    "payload_json",
]

SECRET_VERSION = "0.1.0"  # noqa: S105 (a format version, not a password)


def _bad(message: str) -> EvidenceError:
    return EvidenceError(f"sealed secret payload: {message}", reason="sealed.payload")


@dataclass(frozen=True, slots=True)
class VaultSecret:
    """A pointer to a secret held by a provider (``kbs``: a KBS resource URI)."""

    name: str
    provider: str = "kbs"
    provider_settings: Mapping[str, Any] = field(default_factory=dict)
    annotations: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SECRET_VERSION,
            "type": "vault",
            "name": self.name,
            "provider": self.provider,
            "provider_settings": dict(self.provider_settings),
            "annotations": dict(self.annotations),
        }


@dataclass(frozen=True, slots=True)
class EnvelopeSecret:
    """A data key wrapped by ``key_id`` plus the data encrypted with it (``wrap_type``)."""

    key_id: str
    encrypted_key: bytes
    encrypted_data: bytes
    wrap_type: str
    iv: bytes
    provider: str = "kbs"
    provider_settings: Mapping[str, Any] = field(default_factory=dict)
    annotations: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SECRET_VERSION,
            "type": "envelope",
            "key_id": self.key_id,
            "encrypted_key": b64_encode(self.encrypted_key),
            "encrypted_data": b64_encode(self.encrypted_data),
            "wrap_type": self.wrap_type,
            "iv": b64_encode(self.iv),
            "provider": self.provider,
            "provider_settings": dict(self.provider_settings),
            "annotations": dict(self.annotations),
        }


SecretPayload = VaultSecret | EnvelopeSecret


def _str(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise _bad(f"member {name!r} must be a string")
    return value


def _map(obj: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = obj.get(name)
    if not isinstance(value, dict):
        raise _bad(f"member {name!r} must be a JSON object (use {{}} when empty)")
    return value


def parse_payload(raw: bytes) -> SecretPayload:
    """Parse the decoded payload JSON into a typed secret."""
    # (1) JSON object
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad("not JSON") from exc
    if not isinstance(obj, dict):
        raise _bad("not a JSON object")
    # (2) version "0.1.0" (upstream checks it at unseal time)
    if obj.get("version") != SECRET_VERSION:
        raise _bad(f"version must be {SECRET_VERSION!r}, got {obj.get('version')!r}")
    # (3) tagged type; provider_settings/annotations required
    kind = obj.get("type")
    settings, annotations = _map(obj, "provider_settings"), _map(obj, "annotations")
    if kind == "vault":
        return VaultSecret(
            name=_str(obj, "name"),
            provider=_str(obj, "provider"),
            provider_settings=settings,
            annotations=annotations,
        )
    if kind == "envelope":
        return EnvelopeSecret(
            key_id=_str(obj, "key_id"),
            encrypted_key=b64_decode(_str(obj, "encrypted_key"), field="encrypted_key"),
            encrypted_data=b64_decode(_str(obj, "encrypted_data"), field="encrypted_data"),
            wrap_type=_str(obj, "wrap_type"),
            iv=b64_decode(_str(obj, "iv"), field="iv"),
            provider=_str(obj, "provider"),
            provider_settings=settings,
            annotations=annotations,
        )
    raise _bad(f"type must be 'vault' or 'envelope', got {kind!r}")


def payload_json(payload: SecretPayload) -> bytes:
    """Compact JSON in upstream's member order (what ``seal`` signs)."""
    return json.dumps(payload.to_json(), separators=(",", ":")).encode("utf-8")
