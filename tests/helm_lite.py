"""A small renderer for the subset of Helm's Go templates our chart uses (helm is not packaged for
Debian or PyPI, so ``helm template`` cannot run here; when a ``helm`` binary is on PATH the tests
render with it as well and compare).

Supported: text with ``{{ }}`` actions and ``{{-``/``-}}`` whitespace trimming, comments
``{{/* */}}``, ``if``/``else``/``end``, pipelines ``a | f x``, values ``.Values.a.b``,
``.Release.Name``/``.Release.Namespace``, ``.Chart.Name``/``.Chart.Version``/``.Chart.AppVersion``,
string/int/bool literals, and the functions ``toYaml nindent indent quote default eq ne not and
or b64enc printf trunc``. Anything else raises, so the chart cannot silently use more than this.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

__all__ = ["manifest_text", "render_chart"]

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _truthy(v: Any) -> bool:
    return not (v is None or v is False or v == 0 or v == "" or v == [] or v == {})


def _fmt(v: Any) -> str:
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return json.dumps(v)
    return str(v)


def _to_yaml(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=False).rstrip("\n")


def _indent(n: int, s: Any) -> str:
    pad = " " * int(n)
    return "\n".join(pad + line if line else line for line in _fmt(s).split("\n"))


FUNCS: dict[str, Any] = {
    "toYaml": _to_yaml,
    "nindent": lambda n, s: "\n" + _indent(n, s),
    "indent": _indent,
    "quote": lambda v: json.dumps(_fmt(v) if v is not None else ""),
    "default": lambda d, v=None: v if _truthy(v) else d,
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "not": lambda v: not _truthy(v),
    "and": lambda *a: all(_truthy(x) for x in a),
    "or": lambda *a: any(_truthy(x) for x in a),
    "b64enc": lambda v: base64.b64encode(_fmt(v).encode()).decode(),
    "printf": lambda f, *a: re.sub(r"%[sdv]", "{}", f).format(*(_fmt(x) for x in a)),
    "trunc": lambda n, s: _fmt(s)[: int(n)],
}


class _Ctx:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def value(self, tok: str) -> Any:
        if tok.startswith('"'):
            return json.loads(tok)
        if tok in ("true", "false"):
            return tok == "true"
        if re.fullmatch(r"-?\d+", tok):
            return int(tok)
        if tok.startswith("."):
            cur: Any = self.root
            for part in tok[1:].split("."):
                if not isinstance(cur, dict):
                    return None
                cur = cur.get(part)
            return cur
        raise ValueError(f"unsupported template token {tok!r}")

    def pipeline(self, expr: str) -> Any:
        result: Any = _NOTHING
        for cmd in (c.strip() for c in _split_pipes(expr)):
            toks = shlex.split(cmd, posix=False)
            if toks[0] in FUNCS:
                args = [self.value(t) for t in toks[1:]]
                if result is not _NOTHING:
                    args.append(result)
                result = FUNCS[toks[0]](*args)
            elif len(toks) == 1 and result is _NOTHING:
                result = self.value(toks[0])
            else:
                raise ValueError(f"unsupported template command {cmd!r}")
        return result


_NOTHING = object()


def _split_pipes(expr: str) -> list[str]:
    out, cur, quoted = [], "", False
    for ch in expr:
        if ch == '"':
            quoted = not quoted
        if ch == "|" and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def _tokens(text: str) -> list[tuple[str, str]]:
    """[("text", s) | ("action", expr)] with Go's whitespace trimming applied."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(text):
        chunk = text[pos : m.start()]
        if m.group(1):
            chunk = chunk.rstrip()
        out.append(("text", chunk))
        out.append(("action", m.group(2)))
        out.append(("trim", "1" if m.group(3) else ""))
        pos = m.end()
    out.append(("text", text[pos:]))
    merged: list[tuple[str, str]] = []
    trim_next = False
    for kind, s in out:
        if kind == "trim":
            trim_next = bool(s)
            continue
        if kind == "text" and trim_next:
            s = s.lstrip()
            trim_next = False
        merged.append((kind, s))
    return merged


def _render(tokens: list[tuple[str, str]], ctx: _Ctx) -> str:
    out: list[str] = []
    # stack of (emitting_parent, this_branch_active, any_branch_taken)
    stack: list[tuple[bool, bool, bool]] = []
    emitting = True
    for kind, s in tokens:
        if kind == "text":
            if emitting:
                out.append(s)
            continue
        if s.startswith("/*"):
            continue
        word, _, rest = s.partition(" ")
        if word == "if":
            cond = emitting and _truthy(ctx.pipeline(rest))
            stack.append((emitting, cond, cond))
            emitting = cond
        elif word == "else":
            parent, _, taken = stack.pop()
            if rest.startswith("if "):
                cond = parent and not taken and _truthy(ctx.pipeline(rest[3:]))
                stack.append((parent, cond, taken or cond))
                emitting = cond
            else:
                stack.append((parent, parent and not taken, True))
                emitting = parent and not taken
        elif word == "end":
            parent, _, _ = stack.pop()
            emitting = parent
        elif emitting:
            out.append(_fmt(ctx.pipeline(s)))
    if stack:
        raise ValueError("unterminated {{ if }}")
    return "".join(out)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def render_chart(
    chart: Path,
    *,
    release: str = "trustpod",
    namespace: str = "default",
    values: dict[str, Any] | None = None,
) -> dict[str, str]:
    """``templates/*.yaml`` rendered with ``values.yaml`` merged with ``values``; file -> text
    (files rendering to only whitespace are left out, as helm does)."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    vals = _merge(yaml.safe_load((chart / "values.yaml").read_text()) or {}, values or {})
    ctx = _Ctx(
        {
            "Values": vals,
            "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
            "Chart": {
                "Name": meta["name"],
                "Version": meta["version"],
                "AppVersion": meta.get("appVersion"),
            },
        }
    )
    out: dict[str, str] = {}
    for t in sorted((chart / "templates").glob("*.yaml")):
        text = _render(_tokens(t.read_text()), ctx)
        if text.strip():
            out[t.name] = text
    return out


def manifest_text(chart: Path, release: str, namespace: str) -> str:
    """The plain manifests committed under deploy/kubernetes (the chart with default values)."""
    files = render_chart(chart, release=release, namespace=namespace)
    body = "\n---\n".join(text.strip("\n") for text in files.values())
    return (
        f"# Generated from deploy/helm/{chart.name} with default values (release {release},\n"
        f"# namespace {namespace}): python tests/helm_lite.py. Do not edit by hand.\n---\n"
        + body
        + "\n"
    )


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    out = root / "deploy" / "kubernetes" / "trustpod-kbs.yaml"
    out.write_text(
        manifest_text(root / "deploy" / "helm" / "trustpod-kbs", "trustpod-kbs", "trustpod")
    )
    print(f"wrote {out}")
