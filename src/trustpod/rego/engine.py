"""A thin wrapper over regopy (rego-cpp) that compiles a policy ONCE and queries it many times.

Pitfalls handled (components-on-this-platform.md §1):

1. A query whose value is ``false`` reads as *undefined*: we only ever query compiled bundle
   entrypoints, which return ``false`` correctly.
2. Builtin errors silently become *undefined*: ``strict_built_in_errors`` is on, so a failing
   builtin is an error (``PolicyDenied(reason="rego.error")``, fail closed).
3. Error outputs may not be JSON (``JSONDecodeError`` inside ``Output``): every query is wrapped
   in ``except (RegoError, ValueError)``.
4./5. Parse errors arrive as S-expressions; we turn them into ``EvidenceError(reason="rego.parse")``
   with the message text and line number.

regopy cannot register Python builtins, and data is baked into a bundle when it is built. So the
``query_reference_value(id)`` builtin of upstream's attestation policies is provided by a small
Rego library module added to every compiled policy, reading pre-fetched ``data.reference``
(ADR 0200). A compiled policy is therefore keyed by (policy text, entrypoints, data) and cached.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from regopy import Input, Interpreter, RegoError

from trustpod.errors import EvidenceError, PolicyDenied

__all__ = [
    "DEFAULT_CACHE_ENTRIES",
    "MAX_POLICY_BYTES",
    "REFERENCE_LIBRARY",
    "CompiledPolicy",
    "PolicyEngine",
    "package_of",
    "validate",
]

#: Upper bound on a policy text (admin uploads).
MAX_POLICY_BYTES = 512 * 1024
#: Compiled bundles kept per engine (LRU).
DEFAULT_CACHE_ENTRIES = 64
#: The ``query_reference_value`` library, added in the policy's own package (ADR 0200).
REFERENCE_LIBRARY = (
    "package {package}\n\nquery_reference_value(id) := object.get(data.reference, id, null)\n"
)

_PACKAGE_RE = re.compile(
    r"^\s*package\s+([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)", re.MULTILINE
)
_DEFINES_RV_RE = re.compile(r"^\s*query_reference_value\s*\(", re.MULTILINE)
_ERRMSG_RE = re.compile(r"\(errormsg \d+:(.*?)\)\s*\n?\s*\(errorast", re.DOTALL)
_ERRLOC_RE = re.compile(r"\(error \d+:([^|\s]*)\|(\d+)\|(\d+)")
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


def _parse_error(exc: Exception, text: str) -> EvidenceError:
    raw = str(exc)
    msgs = [m.strip() for m in _ERRMSG_RE.findall(raw)]
    where = ""
    loc = _ERRLOC_RE.search(raw)
    if loc is not None and loc.group(1) == _POLICY_MODULE:
        line = text.encode()[: int(loc.group(2))].count(b"\n") + 1
        where = f" (line {line})"
    detail = "; ".join(dict.fromkeys(msgs)) or raw.strip()[:500]
    return EvidenceError(
        f"policy does not compile{where}: {detail}",
        reason="rego.parse",
        fix="check the policy with `opa check` or `regorus`",
    )


def _entrypoint(package: str, rule: str) -> str:
    if rule.startswith("data."):
        return rule[len("data.") :].replace(".", "/")
    return f"{package.replace('.', '/')}/{rule}"


class CompiledPolicy:
    """One policy + data, compiled into a regopy bundle with fixed entrypoints (rules)."""

    def __init__(
        self,
        text: str,
        rules: Sequence[str],
        data: Mapping[str, Any] | None = None,
        *,
        reference_library: bool = True,
    ) -> None:
        if len(text.encode("utf-8", "replace")) > MAX_POLICY_BYTES:
            raise EvidenceError(
                f"policy is larger than {MAX_POLICY_BYTES} bytes", reason="rego.too_large"
            )
        self.package = package_of(text)
        self.rules = tuple(rules)
        self.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        builder = Interpreter()
        data = dict(data) if data is not None else {}
        data.setdefault("reference", {})
        try:
            builder.add_data(data)
            builder.add_module(_POLICY_MODULE, text)
        except (RegoError, ValueError, TypeError) as exc:
            raise _parse_error(exc, text) from exc
        if reference_library and not _DEFINES_RV_RE.search(text):
            builder.add_module(
                "trustpod_reference.rego", REFERENCE_LIBRARY.format(package=self.package)
            )
        self._entry = {r: _entrypoint(self.package, r) for r in self.rules}
        try:
            self._bundle = builder.build(f"x := data.{self.package}", list(self._entry.values()))
        except (RegoError, ValueError) as exc:
            raise _parse_error(exc, text) from exc
        if not self._bundle.ok():
            raise EvidenceError("policy does not compile", reason="rego.parse")
        self._query = Interpreter()
        self._query.strict_built_in_errors = True
        self._lock = threading.Lock()

    @staticmethod
    def _input(input: Mapping[str, Any]) -> Input:
        try:
            return Input(dict(input))
        except (RegoError, ValueError, TypeError) as exc:
            raise PolicyDenied("policy input is not JSON", reason="rego.error") from exc

    def evaluate(self, input: Mapping[str, Any], rule: str) -> Any:
        """The rule's value; ``None`` when it is undefined. Errors raise ``PolicyDenied``."""
        return self._query_rule(self._input(input), rule)

    def evaluate_all(self, input: Mapping[str, Any]) -> dict[str, Any]:
        """Every compiled rule's value (one input conversion); undefined rules are left out."""
        value = self._input(input)
        out: dict[str, Any] = {}
        for rule in self.rules:
            result = self._query_rule(value, rule)
            if result is not None:
                out[rule] = result
        return out

    def _query_rule(self, value: Input, rule: str) -> Any:
        entry = self._entry.get(rule)
        if entry is None:
            raise PolicyDenied(
                f"rule {rule!r} was not compiled into this policy", reason="rego.error"
            )
        with self._lock:
            try:
                self._query.set_input(value)
                out = self._query.query_bundle_entrypoint(self._bundle, entry)
                ok, text = out.ok(), str(out)
            except (RegoError, ValueError) as exc:
                raise PolicyDenied(
                    f"policy evaluation of {rule!r} failed", reason="rego.error"
                ) from exc
        if not ok:
            raise PolicyDenied(
                f"policy evaluation of {rule!r} failed: {text[:300]}", reason="rego.error"
            )
        if text.strip() == "undefined":
            return None
        try:
            exprs = json.loads(text)["expressions"]
        except (ValueError, KeyError, TypeError) as exc:
            raise PolicyDenied(
                f"policy evaluation of {rule!r} returned no value", reason="rego.error"
            ) from exc
        return exprs[0] if exprs else None


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
    """Check that an uploaded policy compiles; returns its package name or raises
    ``EvidenceError(reason="rego.parse")``."""
    return CompiledPolicy(text, rules, {"reference": {}}).package
