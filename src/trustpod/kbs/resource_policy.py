"""The KBS resource policy (reference §4.1): Rego, ``data.policy.allow`` must be a boolean.

``input`` = the verified token claims; ``data`` = ``{"plugin", "resource-path": [...],
"query": {...}}``. A missing or non-boolean ``allow`` is a deny and a policy error. Our default
(installed with ``overwrite=False``) is fail-closed ``affirming``; presets ``allow-all``,
``deny-all`` and ``affirming`` are stored like any other policy.

Speed: upstream compiles the policy per request. Here each thread keeps one compiled interpreter
per policy digest (request data passed with ``with data.x as ...``), and decisions are cached by
(policy digest, token digest, path, query): the same token asking for the same path costs one
dict lookup.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trustpod.errors import EvidenceError
from trustpod.storage.port import KeyValueStore

__all__ = ["DEFAULT_POLICY", "POLICY_KEY", "PRESETS", "Decision", "ResourcePolicy"]

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


def _affirming(claims: Mapping[str, Any]) -> bool:
    submods = claims.get("submods")
    if isinstance(submods, Mapping):
        items = list(submods.values())
    elif isinstance(submods, list):
        items = submods
    else:
        return False
    return len(items) > 0 and all(
        isinstance(s, Mapping) and s.get("ear.status") == "affirming" for s in items
    )


#: Our presets evaluated natively (same semantics as their Rego text, which stays the stored
#: policy); any other policy text goes through regopy. See docs/adr/0301-kbs-hot-path.md.
_NATIVE: dict[str, Callable[[Mapping[str, Any], str], bool]] = {
    "allow-all": lambda claims, plugin: plugin == "resource",
    "deny-all": lambda claims, plugin: False,
    "affirming": lambda claims, plugin: _affirming(claims),
}


def _preset_name(text: str) -> str:
    for name, body in PRESETS.items():
        if body == text:
            return name
    return "custom"


def _compile(text: str) -> Any:
    from regopy import Interpreter

    interp = Interpreter()
    try:
        interp.add_module("policy.rego", text)
        interp.set_input({})
        out = interp.query("x := data.policy")
        if not out.ok():
            raise ValueError("policy does not evaluate")
    except Exception as exc:  # regopy raises RegoError or ValueError with S-expressions
        raise EvidenceError(
            f"resource policy does not compile: {str(exc).splitlines()[0][:200]}",
            reason="kbs.policy_parse",
            fix="check the Rego (package policy, rule allow) with `opa check` or regopy",
        ) from exc
    return interp


class ResourcePolicy:
    """Stores, validates and evaluates the resource policy on a shared storage backend."""

    def __init__(self, store: KeyValueStore, *, reload_s: float = POLICY_RELOAD_S) -> None:
        self._store = store
        self._reload_s = reload_s
        self._text: tuple[float, str] | None = None
        self._local = threading.local()
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
    ) -> Decision:
        text = self.current()
        digest = hashlib.sha256(text.encode()).hexdigest()
        key = None
        if claims_key is not None:
            key = (digest, claims_key, plugin, tuple(path), tuple(sorted(query.items())))
            with self._cache_lock:
                hit = self._cache.get(key)
            if hit is not None:
                return hit
        decision = self._evaluate(text, digest, claims, plugin, list(path), dict(query))
        if key is not None:
            with self._cache_lock:
                self._cache[key] = decision
                if len(self._cache) > _CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return decision

    def _interpreter(self, text: str, digest: str) -> Any:
        held: tuple[str, Any] | None = getattr(self._local, "compiled", None)
        if held is None or held[0] != digest:
            held = (digest, _compile(text))
            self._local.compiled = held
        return held[1]

    def _evaluate(
        self,
        text: str,
        digest: str,
        claims: Mapping[str, Any],
        plugin: str,
        path: list[str],
        query: dict[str, str],
    ) -> Decision:
        name = _preset_name(text)
        native = _NATIVE.get(name)
        if native is not None:
            return Decision(native(claims, plugin), None, digest, name)
        try:
            interp = self._interpreter(text, digest)
        except EvidenceError as exc:
            return Decision(False, exc.message, digest, name)
        # (2) data = {plugin, resource-path, query}, passed per query (compiled module reused).
        q = (
            f"x := data.policy.allow with data.plugin as {json.dumps(plugin)}"
            f' with data["resource-path"] as {json.dumps(path)}'
            f" with data.query as {json.dumps(query)}"
        )
        try:
            interp.set_input(dict(claims))
            out = interp.query(q)
            value = None if str(out) == "undefined" or not out.ok() else out[0]["x"]
        except Exception as exc:  # RegoError / JSON errors from regopy (pitfalls 2-3)
            return Decision(False, f"policy evaluation failed: {str(exc)[:200]}", digest, name)
        # (3) allow must be a boolean, else deny + policy error.
        if not isinstance(value, bool):
            return Decision(False, "data.policy.allow is not a boolean", digest, name)
        return Decision(value, None, digest, name)
