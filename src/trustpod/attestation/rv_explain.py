"""Which reference value made an appraisal fail: a pure, best-effort reading of the policy.

A trust vector says ``executables: 33``; the admin wants "reference value ``launch_digest``:
``sample.launch_digest`` = ``…`` is not among the registered ``[…]``". Rego gives no trace of
which body expression failed, so this reads the policy text for the reference-value checks
trustpod's default policies (and upstream's) are written with, one per line:

* ``rv_has("NAME", input.PATH)`` and ``input.PATH in query_reference_value("NAME")``:
  membership (a scalar reference value is compared for equality, as ``rv_has`` does);
* ``input.PATH OP rv_one("NAME")`` / ``query_reference_value("NAME")`` with ``OP`` one of
  ``>= <= > < ==``: a comparison with the single registered value.

Each check is evaluated against the policy input and the registered values, and attributed to
the rule it sits in (``executables``, ``hardware``, ...). Checks whose ``input.PATH`` is absent
(another TEE's rules) are skipped. A policy written another way yields no checks: the result
is an explanation aid, never a verdict (the policy's own result decides).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["RvCheck", "failed_reference_values", "reference_value_checks"]

RvCheck = dict[str, Any]

_PATH = r"input((?:\.[A-Za-z_][A-Za-z0-9_]*)+)"
_NAME = r'"([^"\\]{1,128})"'
_HAS = re.compile(rf"rv_has\(\s*{_NAME}\s*,\s*{_PATH}\s*\)")
_IN = re.compile(rf"{_PATH}\s+in\s+query_reference_value\(\s*{_NAME}\s*\)")
_CMP = re.compile(rf"{_PATH}\s*(>=|<=|==|>|<)\s*(?:rv_one|query_reference_value)\(\s*{_NAME}\s*\)")
_RULE = re.compile(r"^\s*(?:default\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*(?::=|=)\s*[^{]*\bif\b\s*\{")
_MISSING = object()
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}


def _lookup(doc: Mapping[str, Any], dotted: str) -> Any:
    value: Any = doc
    for part in dotted.strip(".").split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _member(value: Any, ref: Any) -> bool:
    return value in ref if isinstance(ref, list) else value == ref


def _compare(value: Any, op: str, ref: Any) -> bool | None:
    if isinstance(ref, list):
        if len(ref) != 1:
            return None
        ref = ref[0]
    try:
        result = _OPS[op](value, ref)
    except TypeError:
        return None
    return bool(result)


def reference_value_checks(
    policy_text: str, policy_input: Mapping[str, Any], references: Mapping[str, Any]
) -> list[RvCheck]:
    """Every reference-value check of ``policy_text`` that applies to ``policy_input``."""
    out: list[RvCheck] = []
    rule: str | None = None
    for line in policy_text.splitlines()[:20_000]:
        code = line.split("#", 1)[0]
        head = _RULE.match(code)
        if head:
            rule = head.group(1)  # an ``} else := N if {`` branch keeps the rule it belongs to
        found: list[tuple[str, str, str]] = [(n, p, "in") for n, p in _HAS.findall(code)]
        found += [(n, p, "in") for p, n in _IN.findall(code)]
        found += [(n, p, op) for p, op, n in _CMP.findall(code)]
        for name, path, op in found:
            value = _lookup(policy_input, path)
            if value is _MISSING:
                continue
            ref = references.get(name)
            check: RvCheck = {
                "reference_value": name,
                "claim": path.strip("."),
                "value": value,
                "registered": ref,
                "rule": rule,
            }
            if ref is None:
                check["ok"], check["why"] = False, "no reference value registered under this name"
            elif op == "in":
                check["ok"] = _member(value, ref)
                if not check["ok"]:
                    check["why"] = "the claim is not among the registered values"
            else:
                verdict = _compare(value, op, ref)
                check["ok"] = bool(verdict)
                if not verdict:
                    check["why"] = (
                        f"the claim is not {op} the registered value"
                        if verdict is False
                        else "the registered value is not one comparable value"
                    )
            out.append(check)
    return out


def failed_reference_values(checks: list[RvCheck]) -> list[str]:
    """One line per failed check, for the admin (``trustpod admin explain``)."""
    lines = []
    for c in checks:
        if c.get("ok"):
            continue
        where = f"{c['rule']}: " if c.get("rule") else ""
        lines.append(
            f"{where}reference value {c['reference_value']!r}: {c['claim']} = {c['value']!r}, "
            f"registered {c['registered']!r} ({c.get('why', 'failed')})"
        )
    return lines
