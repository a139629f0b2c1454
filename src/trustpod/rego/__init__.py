"""Rego on regorus (upstream Trustee's and the kata agent's engine), behind one port.

- ``RegoPolicy`` (``trustpod.rego.policy``): modules + data + options, parsed once per thread,
  ``evaluate(rule, input)`` -> value or ``UNDEFINED``; the API every Rego user builds on
  (attestation policies, the KBS resource policy, the kata agent policy).
- ``CompiledPolicy`` / ``PolicyEngine`` (``trustpod.rego.engine``): attestation and resource
  policies with fixed rules, ``query_reference_value`` as a regorus extension, cached by digest.

ADR 0202 records the choice of regorus (PyPI fork ``gordon-to-regorus``) and how to switch back.
"""

from __future__ import annotations

from trustpod.rego.engine import (
    MAX_POLICY_BYTES,
    REFERENCE_EXTENSION,
    CompiledPolicy,
    PolicyEngine,
    package_of,
    validate,
)
from trustpod.rego.policy import RegoPolicy
from trustpod.rego.values import (
    UNDEFINED,
    Evaluation,
    PolicyLimits,
    Undefined,
    rego_error_text,
)

__all__ = [
    "MAX_POLICY_BYTES",
    "REFERENCE_EXTENSION",
    "UNDEFINED",
    "CompiledPolicy",
    "Evaluation",
    "PolicyEngine",
    "PolicyLimits",
    "RegoPolicy",
    "Undefined",
    "package_of",
    "rego_error_text",
    "validate",
]
