"""Reading the policy state ``data.pstate`` through an engine extension (pure text rewrite).

Kata keeps the agent policy's state in the engine's data document and, after every ``ops`` patch,
clears and re-adds the whole document (``kata:src/agent/policy/src/policy.rs``). regorus then
re-prepares the whole policy on the next query (``Engine::add_data`` sets ``prepared = false``:
module analysis, rule gathering, loop hoisting), which costs about 1 ms for a genpolicy-size policy
on every CreateContainer/RemoveContainer (ADR 0960).

``externalize_state(text)`` rewrites every reference ``data.pstate`` (or ``data["pstate"]``,
genpolicy's spelling) of a policy into ``data.<package>.trustpod_pstate__``, a rule appended to the
policy whose value is what the extension ``trustpod.pstate()`` returns (``[state]``, or ``[]`` when
the document has no ``pstate`` — the rule is then undefined, as ``data.pstate`` would be). The
state itself stays a Python value; a patch that only changes ``pstate`` no longer touches the
engine's data.

The rewrite is applied only when it is provably the same document: outside comments and strings
every ``data`` token must be a plain ``data.<name>`` or ``data["<name>"]`` reference (no
``data[x]``, bare ``data``, ``import data``, ``with data.pstate``), and the policy must not already
use the reserved names. Otherwise ``None`` is returned and the caller keeps kata's clear-and-add.
"""

from __future__ import annotations

import re

__all__ = ["STATE_EXTENSION", "STATE_RULE", "externalize_state"]

#: The extension the rewritten policy calls (0 arguments; returns ``[state]`` or ``[]``).
STATE_EXTENSION = "trustpod.pstate"
#: The rule appended to the policy (its package) that holds the state for one evaluation.
STATE_RULE = "trustpod_pstate__"

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: ``data["<key>"]`` (genpolicy writes ``data["pstate"]``): the key, after the ``[``.
_INDEX = re.compile(r'\s*"([A-Za-z0-9_]*)"\s*\]')
_RESERVED = (STATE_RULE, STATE_EXTENSION)


def _code_spans(text: str) -> list[tuple[int, int]] | None:
    """``(start, end)`` spans of ``text`` outside comments and string literals, or ``None``
    when a string is not terminated (the policy will fail to load anyway)."""
    spans: list[tuple[int, int]] = []
    i, start, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            spans.append((start, i))
            end = text.find("\n", i)
            i = n if end < 0 else end
            start = i
        elif ch == '"':
            spans.append((start, i))
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\n":
                    return None
                i += 2 if text[i] == "\\" else 1
            if i >= n:
                return None
            i += 1
            start = i
        elif ch == "`":
            spans.append((start, i))
            end = text.find("`", i + 1)
            if end < 0:
                return None
            i = end + 1
            start = i
        else:
            i += 1
    spans.append((start, n))
    return spans


def externalize_state(text: str, package: str) -> str | None:
    """The policy with ``data.pstate`` read through ``trustpod.pstate()``, or ``None`` when the
    rewrite could change its meaning (module doc)."""
    if any(name in text for name in _RESERVED):
        return None
    spans = _code_spans(text)
    if spans is None:
        return None
    out: list[str] = []
    last = 0
    target = f"data.{package}.{STATE_RULE}"
    for start, end in spans:
        code = text[start:end]
        for m in re.finditer(r"(?<![A-Za-z0-9_.])data(?![A-Za-z0-9_])", code):
            at = start + m.start()
            after = text[at + 4 : at + 5]
            pattern = {".": _IDENT, "[": _INDEX}.get(after)
            ident = pattern.match(text, at + 5) if pattern is not None else None
            if ident is None:
                return None  # data[x], bare data, `data .x`: the document escapes the rewrite
            line_start = text.rfind("\n", 0, at) + 1
            if text[line_start:at].lstrip().startswith("import"):
                return None
            if ident.group(ident.lastindex or 0) != "pstate":
                continue
            if re.search(r"\bwith\s+$", text[line_start:at]):
                return None
            out += [text[last:at], target]
            last = ident.end()
    out.append(text[last:])
    rule = f"\n{STATE_RULE} := w[0] if {{\n\tw := {STATE_EXTENSION}()\n}}\n"
    return "".join(out) + rule
