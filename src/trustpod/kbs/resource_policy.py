"""The KBS resource policy (reference §4.1): Rego, ``data.policy.allow`` must be a boolean.

``input`` = the verified token claims; ``data`` = ``{"plugin", "resource-path": [...],
"query": {...}}``, as upstream's ``policy-engine`` (``deps/policy-engine``). A missing or
non-boolean ``allow`` is a deny and a policy error. Our default (installed with
``overwrite=False``) is fail-closed ``affirming``; presets ``allow-all``, ``deny-all`` and
``affirming`` are stored and evaluated like any other policy: every policy runs on regorus, one
semantics (ADR 0202).

Speed: upstream parses the policy per request. Here the policy is parsed once per digest (and per
thread, ``trustpod.rego.RegoPolicy``), the request data replaces ``data`` per query, and the claims
go in as JSON (the token's own payload when the caller has it, ``claims_json``). Decisions are
cached by (policy digest, token digest, path, query): the same token asking for the same path
costs one dict lookup.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trustpod.errors import EvidenceError, PolicyDenied
from trustpod.rego import UNDEFINED, RegoPolicy
from trustpod.storage.port import KeyValueStore

__all__ = ["ALLOW_RULE", "DEFAULT_POLICY", "POLICY_KEY", "PRESETS", "Decision", "ResourcePolicy"]

POLICY_NAMESPACE = "kbs"
POLICY_KEY = "resource-policy.rego"
_CACHE_ENTRIES = 8192
#: How often a process re-reads the stored policy (a change made through another KBS process
#: on the same storage applies within this time; a change made through this process at once).
POLICY_RELOAD_S = 1.0

PRESETS: dict[str, str] = {
    "allow-all": "package policy\nimport rego.v1\ndefault allow := false\n"
    'allow if data.plugin == "resource"\n',
    "deny-all": "package policy\nimport rego.v1\ndefault allow := false\n",
    "affirming": "package policy\nimport rego.v1\ndefault allow := false\n"
    "allow if {\n"
    "\tcount(input.submods) > 0\n"
    "\tevery _, submod in input.submods {\n"
    '\t\tsubmod["ear.status"] == "affirming"\n'
    "\t}\n"
    "}\n",
}
DEFAULT_POLICY = PRESETS["affirming"]


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    error: str | None
    policy_digest: str
    policy_name: str


def _preset_name(text: str) -> str:
    for name, body in PRESETS.items():
        if body == text:
            return name
    return "custom"


#: The rule upstream's KBS evaluates.
ALLOW_RULE = "data.policy.allow"


def _compile(text: str) -> RegoPolicy:
    try:
        return RegoPolicy({"policy.rego": text})
    except EvidenceError as exc:
        raise EvidenceError(
            f"resource {exc.message}",
            reason="kbs.policy_parse",
            fix="fix the Rego at the line shown (package policy, rule allow; Rego v1 as "
            "upstream's regorus: `if` before rule bodies)",
        ) from exc


class ResourcePolicy:
    """Stores, validates and evaluates the resource policy on a shared storage backend."""

    def __init__(self, store: KeyValueStore, *, reload_s: float = POLICY_RELOAD_S) -> None:
        self._store = store
        self._reload_s = reload_s
        self._text: tuple[float, str] | None = None
        self._meta: tuple[str, str, str] | None = None  # (text, sha256, preset name) memo
        self._compiled: tuple[str, RegoPolicy | EvidenceError] | None = None
        self._compile_lock = threading.Lock()
        self._cache: OrderedDict[tuple[Any, ...], Decision] = OrderedDict()
        self._cache_lock = threading.Lock()

    def install_default(self) -> None:
        self._store.put(POLICY_NAMESPACE, POLICY_KEY, DEFAULT_POLICY.encode(), overwrite=False)

    def set(self, text: str) -> None:
        _compile(text)  # (1) syntax-checked before it is stored, as upstream
        self._store.put(POLICY_NAMESPACE, POLICY_KEY, text.encode())
        self._text = None

    def policy_ids(self) -> list[str]:
        return [k.removesuffix(".rego") for k in self._store.list_keys(POLICY_NAMESPACE)]

    def current(self) -> str:
        """The stored policy, re-read at most every ``reload_s`` (other processes' changes)."""
        now = time.monotonic()
        held = self._text
        if held is not None and now - held[0] < self._reload_s:
            return held[1]
        raw = self._store.get(POLICY_NAMESPACE, POLICY_KEY)
        text = DEFAULT_POLICY if raw is None else raw.decode("utf-8", "replace")
        self._text = (now, text)
        return text

    def evaluate(
        self,
        claims: Mapping[str, Any],
        plugin: str,
        path: Sequence[str],
        query: Mapping[str, str],
        *,
        claims_key: bytes | None = None,
        claims_json: str | None = None,
    ) -> Decision:
        """Decide one request. ``claims_json`` (optional) is ``claims`` as JSON text, e.g. the
        verified token's payload, passed to the engine as is (saves one serialisation)."""
        text = self.current()
        digest = self._describe(text)[0]
        key = None
        if claims_key is not None:
            key = (digest, claims_key, plugin, tuple(path), tuple(sorted(query.items())))
            with self._cache_lock:
                hit = self._cache.get(key)
            if hit is not None:
                return hit
        decision = self._evaluate(
            text, digest, claims, plugin, list(path), dict(query), claims_json
        )
        if key is not None:
            with self._cache_lock:
                self._cache[key] = decision
                if len(self._cache) > _CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return decision

    def _describe(self, text: str) -> tuple[str, str]:
        """(sha256, preset name) of ``text``, memoised for the text ``current`` keeps."""
        meta = self._meta
        if meta is None or meta[0] is not text:
            meta = (text, hashlib.sha256(text.encode()).hexdigest(), _preset_name(text))
            self._meta = meta
        return meta[1], meta[2]

    def _policy(self, text: str, digest: str) -> RegoPolicy | EvidenceError:
        held = self._compiled
        if held is None or held[0] != digest:
            with self._compile_lock:
                held = self._compiled
                if held is None or held[0] != digest:
                    try:
                        compiled: RegoPolicy | EvidenceError = _compile(text)
                    except EvidenceError as exc:  # a stored policy that no longer parses
                        compiled = exc
                    held = (digest, compiled)
                    self._compiled = held
        return held[1]

    def _evaluate(
        self,
        text: str,
        digest: str,
        claims: Mapping[str, Any],
        plugin: str,
        path: list[str],
        query: dict[str, str],
        claims_json: str | None = None,
    ) -> Decision:
        name = self._describe(text)[1]
        policy = self._policy(text, digest)
        if isinstance(policy, EvidenceError):
            return Decision(False, policy.message, digest, name)
        # (2) data = {plugin, resource-path, query}, replaced per query (parsed policy reused).
        data = json.dumps(
            {"plugin": plugin, "resource-path": path, "query": query}, separators=(",", ":")
        )
        try:
            if claims_json is not None:
                value = policy.evaluate(ALLOW_RULE, input_json=claims_json, data_json=data)
            else:
                value = policy.evaluate(ALLOW_RULE, claims, data_json=data)
        except PolicyDenied as exc:  # builtin errors, conflicts, non-JSON input: fail closed
            return Decision(False, exc.message, digest, name)
        # (3) allow must be a boolean, else deny + policy error.
        if value is UNDEFINED or not isinstance(value, bool):
            return Decision(False, "data.policy.allow is not a boolean", digest, name)
        return Decision(value, None, digest, name)
