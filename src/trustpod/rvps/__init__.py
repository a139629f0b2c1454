"""Reference value provider service (RVPS): register/query reference values (protocol §4.4)."""

from __future__ import annotations

from trustpod.rvps.message import ReferenceValue, parse_message
from trustpod.rvps.store import NAMESPACE, ReferenceValueStore

__all__ = ["NAMESPACE", "ReferenceValue", "ReferenceValueStore", "parse_message"]
