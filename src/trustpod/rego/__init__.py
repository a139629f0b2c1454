"""Rego policies on regopy (rego-cpp), compiled once and queried many times.

See ``trustpod.rego.engine`` and ADR 0200 (reference values as pre-fetched ``data.reference``).
"""

from __future__ import annotations

from trustpod.rego.engine import (
    REFERENCE_LIBRARY,
    CompiledPolicy,
    PolicyEngine,
    package_of,
    validate,
)

__all__ = ["REFERENCE_LIBRARY", "CompiledPolicy", "PolicyEngine", "package_of", "validate"]
