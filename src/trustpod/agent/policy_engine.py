"""One loaded agent policy and its state, evaluated as kata's ``AgentPolicy`` does (regorus).

Steps of ``allow_request(ep, input)`` (``kata:src/agent/policy/src/policy.rs``, reference
pods-images-gpu.md §1.3, guest-and-control-plane.md §6.1):

1. ``input`` is set from the request's serde JSON; the query is ``data.agent_policy.<ep>``.
2. ``print()`` output is gathered and joined with spaces (the denial message).
3. Not exactly one result (an *undefined* rule) is an error, not a denial, unless the policy sets
   ``AllowRequestsFailingPolicy := true`` (then allowed).
4. A boolean result is the decision. An object must be ``{"allowed": bool, "ops"?: JSON patch}``;
   when allowed, ``ops`` (RFC 6902) are applied to the whole data document (``{"pstate": {}}`` at
   load) and the engine's data is replaced. Any other value is an error.
5. A denial under ``AllowRequestsFailingPolicy`` is turned into an allow.

Limits are kata's raised regorus limits (64 KiB per line, 16 MiB, 200 000 lines), as named
settings. Divergences (ADR 0950, docs/compat.md): the policy must declare ``package agent_policy``
(kata accepts any package and then fails every request), and ``AllowRequestsFailingPolicy`` is
re-read from the new policy alone (kata keeps the old flag while evaluating it).

Engine: ``trustpod.rego.RegoPolicy`` (regorus, one engine per thread: regorus engines are
unsendable); the data document is passed with every query as ``data_json``. When the policy reads
its state only as ``data.pstate`` (``policy_state.externalize_state``), the state is handed to
the engine through the ``trustpod.pstate()`` extension instead, so a patch of ``pstate`` does not
make regorus re-prepare the policy (ADR 0960); any other change of the document still replaces
the engine's data, as kata does.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import jsonpatch

from trustpod.agent.policy_state import STATE_EXTENSION, externalize_state
from trustpod.errors import ConfigError, EvidenceError, PolicyDenied
from trustpod.rego import UNDEFINED, PolicyLimits, RegoPolicy

__all__ = [
    "ALLOW_FAILURES_RULE",
    "HOISTED_KEY",
    "PACKAGE",
    "AgentPolicy",
    "Decision",
    "PolicySettings",
    "hoist_policy_data",
]

log = logging.getLogger(__name__)

#: The package every agent policy must declare (queries are ``data.agent_policy.<Request>``).
PACKAGE = "agent_policy"
#: The rule that turns denials and undefined rules into allows (debug only; insecure).
ALLOW_FAILURES_RULE = "AllowRequestsFailingPolicy"
_INITIAL_DATA: dict[str, Any] = {"pstate": {}}
#: Where a hoisted ``policy_data`` lives in the engine's data (never in the policy's state).
HOISTED_KEY = "trustpod_hoisted_policy_data"
_TAIL_RE = re.compile(r"^policy_data\s*:=\s*", re.MULTILINE)


def hoist_policy_data(text: str) -> tuple[str, str | None]:
    """``(text', data_json)``: a trailing ``policy_data := <JSON>`` replaced by a reference to
    ``data.<HOISTED_KEY>`` and its JSON; ``(text, None)`` when the policy has no such tail."""
    matches = list(_TAIL_RE.finditer(text))
    if len(matches) != 1:
        return text, None
    m = matches[0]
    try:
        value, end = json.JSONDecoder().raw_decode(text, m.end())
    except json.JSONDecodeError:
        return text, None
    if text[end:].strip() or not isinstance(value, dict):
        return text, None
    head = text[: m.start()] + f"policy_data := data.{HOISTED_KEY}\n"
    return head, json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """Named limits on a policy text, raised as kata raises regorus' defaults."""

    #: Longest line (regorus ``max_col``; default 1024 rejects genpolicy's long CUDA env values).
    max_line_bytes: int = 64 * 1024
    #: Largest policy text (regorus ``max_file_bytes``).
    max_policy_bytes: int = 16 * 1024 * 1024
    #: Most lines in a policy (regorus ``max_lines``).
    max_policy_lines: int = 200_000
    #: Longest denial message kept from the policy's ``print()`` output.
    max_prints_chars: int = 4096
    #: Evaluate a trailing ``policy_data := <JSON>`` (genpolicy's layout) once, as data, instead
    #: of rebuilding the literal on every query (same values; ADR 0950).
    hoist_policy_data: bool = True
    #: Read ``data.pstate`` through an extension (no re-prepare after a state patch), when the
    #: rewrite provably keeps the policy's meaning (ADR 0960); False: kata's clear-and-add.
    externalize_state: bool = True

    def __post_init__(self) -> None:
        for name in ("max_line_bytes", "max_policy_bytes", "max_policy_lines", "max_prints_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"agent policy setting {name} must be positive")


class Decision(NamedTuple):
    """A decision: allowed or not, and the policy's ``print()`` output joined with spaces."""

    allowed: bool
    prints: str


class AgentPolicy:
    """A loaded policy plus its data document. Not thread-safe: the gate serialises calls."""

    def __init__(self, text: str, *, settings: PolicySettings | None = None) -> None:
        self.settings = settings or PolicySettings()
        s = self.settings
        size = len(text.encode("utf-8"))
        if size > s.max_policy_bytes:
            raise ConfigError(
                f"agent policy is {size} bytes, over the limit of {s.max_policy_bytes}",
                reason="agent_policy.too_large",
                fix="raise max_policy_bytes in the agent policy settings",
            )
        self._hoisted: str | None = None
        if s.hoist_policy_data:
            text, self._hoisted = hoist_policy_data(text)
        #: ``[pstate]`` (or ``[]``) as the ``trustpod.pstate()`` extension returns it; None when
        #: the state lives in the engine's data (kata's way).
        self._state_box: list[Any] | None = None
        rewritten = externalize_state(text, PACKAGE) if s.externalize_state else None
        loaded: RegoPolicy | None = None
        if rewritten is not None:
            box: list[Any] = [{}]
            try:
                loaded = self._load(rewritten, {STATE_EXTENSION: (0, lambda: box)})
                self._state_box = box
            except EvidenceError:
                loaded = None  # the original's own error (if any) is the one to report
        try:
            self._rego = loaded or self._load(text, None)
            packages = self._rego.packages
        except EvidenceError as exc:
            raise ConfigError(
                f"agent policy does not load: {exc.message}",
                reason="agent_policy.parse",
                fix="check the policy with `trustpod policy check` (Rego v1 syntax, regorus)",
            ) from exc
        if PACKAGE not in packages:
            raise ConfigError(
                f"agent policy declares {packages or 'no package'}, not `package {PACKAGE}`",
                reason="agent_policy.package",
                fix=f"start the policy with `package {PACKAGE}`",
            )
        self._data: dict[str, Any] = copy.deepcopy(_INITIAL_DATA)
        self._data_json = self._sync(self._data, None)
        self.allow_failures = False
        try:
            self.allow_failures = self.allow_request(ALLOW_FAILURES_RULE, "{}").allowed
        except ConfigError:
            self.allow_failures = False
        if self.allow_failures:
            log.warning(
                "insecure_allow_requests_failing_policy: the agent policy sets %s; "
                "every denial and policy error is ignored",
                ALLOW_FAILURES_RULE,
            )

    def _load(self, text: str, extensions: dict[str, Any] | None) -> RegoPolicy:
        s = self.settings
        return RegoPolicy(
            {"policy.rego": text},
            limits=PolicyLimits(
                max_col=s.max_line_bytes,
                max_file_bytes=s.max_policy_bytes,
                max_lines=s.max_policy_lines,
            ),
            gather_prints=True,
            extensions=extensions,
        )

    def _sync(self, doc: dict[str, Any], old: dict[str, Any] | None) -> str:
        """The engine's data JSON for ``doc`` (``old``: the document it replaces), with the
        state box updated when the state lives outside the engine."""
        box = self._state_box
        if box is None:
            return self._compose(doc)
        rest = {k: v for k, v in doc.items() if k != "pstate"}
        if old is not None and rest == {k: v for k, v in old.items() if k != "pstate"}:
            data_json = self._data_json  # only pstate changed: the engine keeps its data
        else:
            data_json = self._compose(rest)
        json.dumps(doc.get("pstate"), allow_nan=False)  # the same JSON check as kata's path
        box[:] = [doc["pstate"]] if "pstate" in doc else []
        return data_json

    def _compose(self, doc: dict[str, Any]) -> str:
        """The engine's data JSON: the policy's data document (+ the hoisted policy_data)."""
        text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
        if self._hoisted is None:
            return text
        sep = "," if text != "{}" else ""
        return f'{text[:-1]}{sep}"{HOISTED_KEY}":{self._hoisted}}}'

    @property
    def data(self) -> dict[str, Any]:
        """A copy of the data document (``{"pstate": {...}}`` plus what ops added)."""
        return copy.deepcopy(self._data)

    def _error(self, ep: str, what: str) -> ConfigError:
        return ConfigError(
            f"policy check: {ep}: {what}",
            reason="agent_policy.eval",
            fix=f"define `{ep}` in the agent policy (or `default {ep} := false`)",
        )

    def allow_request(
        self, ep: str, input_json: str | None = None, *, input_value: dict[str, Any] | None = None
    ) -> Decision:
        """Steps 1-5 of the module doc, for the request as JSON text or as the serde dict itself
        (``input_value``: no JSON round trip). Raises ``ConfigError(reason='agent_policy.eval')``
        for an evaluation error (kata: ttRPC INTERNAL)."""
        rule = f"data.{PACKAGE}.{ep}"
        try:
            ev = self._rego.run(
                [rule], input_json=input_json, data_json=self._data_json, input_value=input_value
            )
        except PolicyDenied as exc:  # regorus evaluation error: kata's INTERNAL, not a denial
            raise self._error(ep, f"evaluation failed: {exc.message}") from exc
        prints = " ".join(ev.prints)[: self.settings.max_prints_chars]
        value = ev.values[rule]
        if value is UNDEFINED:
            if self.allow_failures:
                return Decision(True, prints)
            raise self._error(ep, "unexpected eval_query result len 0 (rule undefined)")
        if isinstance(value, bool):
            allowed = value
        elif isinstance(value, dict):
            allowed = self._metadata_response(ep, value)
        else:
            raise self._error(ep, f"unexpected eval_query result type {type(value).__name__}")
        if not allowed and self.allow_failures:
            log.warning("policy: ignoring error for %s (%s)", ep, ALLOW_FAILURES_RULE)
            allowed = True
        return Decision(allowed, prints)

    def _metadata_response(self, ep: str, value: dict[str, Any]) -> bool:
        allowed = value.get("allowed")
        if not isinstance(allowed, bool):
            raise self._error(ep, "result object has no boolean `allowed`")
        ops = value.get("ops")
        if allowed and ops is not None:
            if not isinstance(ops, list):
                raise self._error(ep, "result `ops` is not a JSON patch (array)")
            try:
                patched = jsonpatch.apply_patch(self._data, ops, in_place=False)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise self._error(ep, f"state patch failed: {exc}") from exc
            except (TypeError, KeyError, ValueError) as exc:
                raise self._error(ep, f"state patch is malformed: {exc}") from exc
            if not isinstance(patched, dict):
                raise self._error(ep, "state patch replaced the data document with a non-object")
            if HOISTED_KEY in patched and self._hoisted is not None:
                raise self._error(ep, f"state patch writes the reserved key {HOISTED_KEY!r}")
            try:
                data_json = self._sync(patched, self._data)
            except (TypeError, ValueError) as exc:
                raise self._error(ep, f"patched state is not JSON: {exc}") from exc
            self._data, self._data_json = patched, data_json
        return allowed
