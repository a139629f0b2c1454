"""The storage port every stateful component uses (upstream ``deps/key-value-storage``).

Values are opaque bytes in named namespaces. Upstream's namespace names are kept so a layout can
be shared or migrated: ``repository`` (resources, key ``repo/type/tag``), ``kbs`` (resource
policy), ``kbs_protocol_session`` (RCAR sessions), ``attestation_service_policy`` (``<id>.rego``),
``reference_value``. trustpod adds ``trustpod_keys`` (token signer key) and ``trustpod_audit``
(denial explanations).

The port is synchronous: backends are local (SQLite) or fast network stores; a backend that does
I/O wraps its failures into ``DependencyError``. Adding PostgreSQL or Redis means adding a class
that satisfies this Protocol, nothing else.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["NAMESPACES", "KeyValueStore"]

NAMESPACES = (
    "repository",
    "kbs",
    "kbs_protocol_session",
    "attestation_service_policy",
    "reference_value",
    "trustpod_keys",
    "trustpod_audit",
)


@runtime_checkable
class KeyValueStore(Protocol):
    """Port: a namespaced key-value store. Unknown namespaces raise ``ConfigError``."""

    def get(self, namespace: str, key: str) -> bytes | None:
        """The value, or ``None`` when absent."""
        ...

    def put(self, namespace: str, key: str, value: bytes, *, overwrite: bool = True) -> bool:
        """Store ``value``. With ``overwrite=False`` an existing value is kept and ``False`` is
        returned (atomic insert-if-absent: replicas racing to create the same key agree)."""
        ...

    def delete(self, namespace: str, key: str) -> bool:
        """Delete; ``True`` when something was deleted."""
        ...

    def list_keys(self, namespace: str) -> list[str]:
        """All keys in the namespace, sorted."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
