"""Offline policy tests: genpolicy's ``testcases.json`` format against one engine (pure).

A case is ``{"kind": "<RequestName>", "request": {...}, "allowed"?: bool, "description"?: str}``
(kata's harness, ``kata:src/tools/genpolicy/tests/policy/main.rs``). Every partial request is
first normalised to the full serde shape the agent would evaluate (``serde.normalize``: proto
defaults filled, unknown keys dropped; ``CopyFileRequest`` as ``PolicyCopyFileRequest``), then all
cases run **in order against the same engine**, so state (``pstate``) carries across cases. A
``SetPolicyRequest`` case that is allowed installs its policy, as the agent would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor

from trustpod.agent.policy import KataPolicyGate
from trustpod.agent.policy_engine import PolicySettings
from trustpod.agent.serde import COPY_FILE_REQUEST, normalize, normalize_copy_file
from trustpod.errors import EvidenceError, TrustpodError

__all__ = ["MAX_CASES", "Case", "CaseResult", "parse_cases", "run_cases"]

#: Most cases one file may hold.
MAX_CASES = 10_000

DescriptorLookup = Callable[[str], Descriptor | None]


@dataclass(frozen=True, slots=True)
class Case:
    """One normalised case."""

    kind: str
    request: dict[str, Any]
    description: str
    expected: bool | None


def _unusable(what: str) -> EvidenceError:
    return EvidenceError(
        f"policy cases: {what}",
        reason="agent_policy.cases",
        fix='write a JSON list of {"kind": "<RequestName>", "request": {...}} objects',
    )


def parse_cases(doc: Any, lookup: DescriptorLookup) -> list[Case]:
    """Validate and normalise every case first (``EvidenceError`` on unusable input)."""
    if not isinstance(doc, list):
        raise _unusable("the document is not a JSON list")
    if len(doc) > MAX_CASES:
        raise _unusable(f"more than {MAX_CASES} cases")
    out: list[Case] = []
    for i, item in enumerate(doc):
        if not isinstance(item, Mapping):
            raise _unusable(f"case {i} is not an object")
        kind = item.get("kind")
        if not isinstance(kind, str) or not kind.isidentifier():
            raise _unusable(f"case {i} has no request kind (e.g. CreateContainerRequest)")
        request = item.get("request", {})
        description = item.get("description", "")
        expected = item.get("allowed")
        if not isinstance(description, str):
            raise _unusable(f"case {i}: description is not a string")
        if expected is not None and not isinstance(expected, bool):
            raise _unusable(f"case {i}: allowed is not a boolean")
        try:
            if kind == COPY_FILE_REQUEST:
                full = normalize_copy_file(request)
            else:
                desc = lookup(kind)
                if desc is None:
                    raise _unusable(f"case {i}: unknown request kind {kind!r}")
                full = normalize(desc, request)
        except EvidenceError as exc:
            if exc.reason == "agent_policy.cases":
                raise
            raise _unusable(f"case {i} ({kind}): {exc.message}") from exc
        out.append(Case(kind, full, description, expected))
    return out


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One decision; ``row()`` is the JSON line ``policy check`` prints."""

    case: Case
    allowed: bool
    error: str | None = None
    prints: str = ""

    @property
    def matches(self) -> bool | None:
        """Whether the decision equals the case's ``allowed`` (``None``: no expectation)."""
        return None if self.case.expected is None else self.allowed == self.case.expected

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "description": self.case.description,
            "kind": self.case.kind,
            "allowed": self.allowed,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


def run_cases(
    policy: str, cases: Sequence[Case], *, settings: PolicySettings | None = None
) -> list[CaseResult]:
    """Every case in order against one gate; the policy is installed as the initdata policy
    would be (no check)."""
    gate = KataPolicyGate(policy, settings=settings)
    results: list[CaseResult] = []
    for case in cases:
        try:
            decision = gate.evaluate(case.kind, case.request)
            if decision.allowed and case.kind == "SetPolicyRequest":
                gate.set_policy(str(case.request.get("policy", "")))
            results.append(CaseResult(case, decision.allowed, prints=decision.prints))
        except TrustpodError as exc:
            results.append(CaseResult(case, False, error=exc.message))
    return results
