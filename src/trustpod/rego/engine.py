"""Attestation and resource policies on ``RegoPolicy`` (regorus), cached by policy digest.

``CompiledPolicy`` is one policy text + data with a fixed set of rules (``trust_claims``,
``extensions``; ``allow``), evaluated as upstream Trustee's ``policy-engine`` does:
rule paths ``data.<package>.<rule>``, a rule the policy does not define is *no claim*
(``None`` here, left out of ``evaluate_all``), errors fail closed.

``query_reference_value(id)``, the builtin of upstream's attestation policies, is registered as a
regorus extension, as upstream's broker does (``ear_token/broker.rs``): one string argument,
the registered value or ``null``. Values come from ``data["reference"]``, which the service fills
from the RVPS before each appraisal (ADR 0200, amended by ADR 0202); ``data.reference`` stays
readable from Rego too. A policy that defines its own ``query_reference_value`` keeps it (a
policy's function wins over an extension in regorus).

``PolicyEngine`` caches ``CompiledPolicy`` objects (LRU) keyed by SHA-256 of the text, the rules
and a digest of ``data``: a policy is parsed once per digest (and per thread, see
``trustpod.rego.policy``).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from trustpod.errors import EvidenceError, PolicyDenied
from trustpod.rego.policy import RegoPolicy
from trustpod.rego.values import UNDEFINED

__all__ = [
    "DEFAULT_CACHE_ENTRIES",
    "MAX_POLICY_BYTES",
    "REFERENCE_EXTENSION",
    "CompiledPolicy",
    "PolicyEngine",
    "package_of",
    "validate",
]

#: Upper bound on a policy text (admin uploads).
MAX_POLICY_BYTES = 512 * 1024
#: Compiled policies kept per engine (LRU).
DEFAULT_CACHE_ENTRIES = 64
#: Name of upstream's reference-value builtin, registered as a regorus extension.
REFERENCE_EXTENSION = "query_reference_value"

_PACKAGE_RE = re.compile(
    r"^\s*package\s+([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)", re.MULTILINE
)
_POLICY_MODULE = "policy.rego"


def package_of(text: str) -> str:
    """The policy's package name (``policy`` for upstream's policies)."""
    m = _PACKAGE_RE.search(text)
    if m is None:
        raise EvidenceError(
            "policy has no package declaration",
            reason="rego.parse",
            fix="start the policy with `package policy`",
        )
    return m.group(1)


def _rule_path(package: str, rule: str) -> str:
    return rule if rule.startswith("data.") else f"data.{package}.{rule}"


def _reference_lookup(references: Mapping[str, Any]) -> Any:
    def query_reference_value(reference_value_id: Any) -> Any:
        if not isinstance(reference_value_id, str):
            raise TypeError("query_reference_value expects one string (a reference value id)")
        return references.get(reference_value_id)

    return query_reference_value


class CompiledPolicy:
    """One policy + data with fixed rules, parsed once (per thread) and queried many times."""

    def __init__(
        self,
        text: str,
        rules: Sequence[str],
        data: Mapping[str, Any] | None = None,
        *,
        reference_library: bool = True,
        rego_v0: bool = False,
    ) -> None:
        if len(text.encode("utf-8", "replace")) > MAX_POLICY_BYTES:
            raise EvidenceError(
                f"policy is larger than {MAX_POLICY_BYTES} bytes", reason="rego.too_large"
            )
        self.package = package_of(text)
        self.rules = tuple(rules)
        self.sha256 = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
        data = dict(data) if data is not None else {}
        references = data.setdefault("reference", {})
        if not isinstance(references, Mapping):
            raise EvidenceError("data.reference must be an object", reason="rego.parse")
        extensions = {}
        if reference_library:
            extensions[REFERENCE_EXTENSION] = (1, _reference_lookup(dict(references)))
        self._paths = {r: _rule_path(self.package, r) for r in self.rules}
        self.policy = RegoPolicy(
            {_POLICY_MODULE: text},
            data=data,
            rego_v0=rego_v0,
            extensions=extensions,
            # the lookup is a pure function of data["reference"], which is part of the key
            extensions_key=f"{REFERENCE_EXTENSION}=data.reference" if extensions else None,
        )

    def evaluate(self, input: Mapping[str, Any], rule: str) -> Any:
        """The rule's value; ``None`` when it is undefined. Errors raise ``PolicyDenied``."""
        path = self._paths.get(rule)
        if path is None:
            raise PolicyDenied(f"rule {rule!r} is not a rule of this policy", reason="rego.error")
        value = self.policy.evaluate(path, input)
        return None if value is UNDEFINED else value

    def evaluate_all(self, input: Mapping[str, Any]) -> dict[str, Any]:
        """Every rule's value (input set once); undefined rules are left out."""
        got = self.policy.evaluate_many(tuple(self._paths.values()), input)
        return {rule: got[path] for rule, path in self._paths.items() if got[path] is not UNDEFINED}


class PolicyEngine:
    """Caches ``CompiledPolicy`` objects keyed by sha256(text), rules and data (LRU)."""

    def __init__(self, *, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        self._max = max_entries
        self._cache: OrderedDict[tuple[str, tuple[str, ...], str], CompiledPolicy] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _data_key(data: Mapping[str, Any] | None) -> str:
        if data is None:
            return ""
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def compile(
        self, text: str, rules: Sequence[str], data: Mapping[str, Any] | None = None
    ) -> CompiledPolicy:
        key = (
            hashlib.sha256(text.encode("utf-8", "replace")).hexdigest(),
            tuple(rules),
            self._data_key(data),
        )
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        compiled = CompiledPolicy(text, rules, data)
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return compiled

    def evaluate(
        self, text: str, input: Mapping[str, Any], data: Mapping[str, Any] | None, rule: str
    ) -> Any:
        """Compile (cached) and evaluate one rule; ``None`` when undefined."""
        return self.compile(text, (rule,), data).evaluate(input, rule)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()


def validate(text: str, rules: Sequence[str] = ()) -> str:
    """Check that an uploaded policy parses; returns its package name or raises
    ``EvidenceError(reason="rego.parse")`` with regorus' whole message."""
    return CompiledPolicy(text, rules, {"reference": {}}).package
