"""JSON from untrusted peers with a nesting limit (pure).

``json.loads`` recurses once per nesting level: 10,000 levels raise ``RecursionError``, which is
no ``ValueError`` and used to escape as a 500. ``loads`` checks the depth before parsing
(containers outside strings are counted with one regular expression, so a body with few
brackets costs one ``bytes.count``) and raises ``EvidenceError`` (400) with reason
``json.depth``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from trustpod.errors import EvidenceError

__all__ = ["DEFAULT_MAX_JSON_DEPTH", "json_depth", "loads"]

#: Deepest nesting accepted (objects and arrays). Protocol messages, evidence and policies
#: nest fewer than 16 levels.
DEFAULT_MAX_JSON_DEPTH = 64

_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def json_depth(data: bytes) -> int:
    """The deepest container nesting in ``data`` (strings skipped); malformed input gives a
    best-effort figure, ``json.loads`` rejects it afterwards."""
    depth = deepest = 0
    for m in _TOKENS.finditer(data):
        c = m.group()
        if c in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
        elif c in (b"]", b"}"):
            depth -= 1
    return deepest


def loads(data: bytes | str, *, max_depth: int = DEFAULT_MAX_JSON_DEPTH, what: str = "JSON") -> Any:
    """``json.loads`` that refuses nesting deeper than ``max_depth`` (``EvidenceError``).

    Other decoding failures raise ``ValueError``/``UnicodeDecodeError`` as ``json.loads`` does.
    """
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if raw.count(b"[") + raw.count(b"{") > max_depth and json_depth(raw) > max_depth:
        raise EvidenceError(
            f"{what} nests deeper than {max_depth} levels",
            reason="json.depth",
            fix="send flatter JSON (the limit is [trustpod] max_json_depth on the KBS)",
        )
    try:
        return json.loads(raw)
    except RecursionError as exc:  # pragma: no cover - max_depth above the interpreter's limit
        raise EvidenceError(f"{what} nests too deeply", reason="json.depth") from exc
