"""Values and messages of ``trustpod.rego``: ``UNDEFINED``, length limits, evaluation results,
regorus error text (backtrace cut, long source lines cropped) and its one-line summary."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from trustpod.errors import ConfigError

__all__ = [
    "MAX_ERROR_CHARS",
    "UNDEFINED",
    "Evaluation",
    "PolicyLimits",
    "Undefined",
    "error_summary",
    "nesting_depth",
    "rego_error_text",
]

#: Upper bound on an error message passed back to an admin (source lines are also cropped).
MAX_ERROR_CHARS = 4000
_MAX_SOURCE_LINE = 200
_TOKENS_RE = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*|[\[\]{}()]')
_LOCATION_RE = re.compile(r"-->\s*(?P<file>[^\n]*?):(?P<line>\d+):(?P<col>\d+)")


class Undefined:
    """The value of a rule that is not defined for this input (falsy; one instance)."""

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = Undefined()


@dataclass(frozen=True, slots=True)
class PolicyLimits:
    """regorus' policy length limits (``set_policy_length_config``); defaults = regorus'."""

    max_col: int = 1024
    max_file_bytes: int = 1024 * 1024
    max_lines: int = 20_000
    #: Deepest nesting of ``[``/``{``/``(`` (ours, checked before regorus sees the text):
    #: regorus' parse time grows exponentially with array/object nesting (16 levels of ``[``
    #: take seconds) and its parser overflows the stack on thousands of levels.
    max_nesting: int = 12

    def __post_init__(self) -> None:
        for name in ("max_col", "max_file_bytes", "max_lines", "max_nesting"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"Rego policy limit {name} must be a positive integer")


class Evaluation(NamedTuple):
    """Rule values (``UNDEFINED`` when undefined) and the ``print()`` lines of the evaluation."""

    values: dict[str, Any]
    prints: tuple[str, ...]


def rego_error_text(exc: BaseException) -> str:
    """regorus' message without the Rust backtrace, source lines cropped, length capped."""
    raw = str(exc).split("\nStack backtrace:", 1)[0].strip("\n")
    lines = [
        ln if len(ln) <= _MAX_SOURCE_LINE else ln[:_MAX_SOURCE_LINE] + " ..."
        for ln in raw.splitlines()
    ]
    text = "\n".join(lines).strip()
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + " ..."


def error_summary(text: str) -> str:
    """``line L, column C: <error>`` from a regorus message (or the message itself)."""
    errors = [ln[len("error:") :].strip() for ln in text.splitlines() if ln.startswith("error:")]
    loc = _LOCATION_RE.search(text)
    what = errors[-1] if errors else text.splitlines()[0] if text else "unknown error"
    if loc is None:
        return what
    return f"{loc.group('file')} line {loc.group('line')}, column {loc.group('col')}: {what}"


def nesting_depth(text: str) -> int:
    """Deepest bracket nesting of a Rego text, outside strings, raw strings and comments."""
    depth = deepest = 0
    for m in _TOKENS_RE.finditer(text):
        tok = m.group()
        if tok in "[{(":
            depth += 1
            deepest = max(deepest, depth)
        elif tok in "]})":
            depth = max(depth - 1, 0)
    return deepest
