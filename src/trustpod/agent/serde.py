"""Kata's serde JSON shape of agent requests, derived from protobuf descriptors (pure).

The kata agent evaluates ``data.agent_policy.<RequestName>`` with ``input`` =
``serde_json::to_string(req)`` of its rust-protobuf structs (pods-images-gpu.md §1.1,
``kata:src/libs/protocols/build.rs``, ``serde_config.rs``). That is *not* protobuf's JSON mapping:

1. keys are the proto field names verbatim; a name that is a Rust keyword gets ``_`` (``type_``);
2. enums are integers; 64-bit integers are JSON numbers;
3. an unset singular message field is ``null``; repeated fields are ``[]`` and maps ``{}`` when
   empty; scalars always carry their proto default;
4. ``bytes`` are arrays of integers;
5. a proto3 ``optional`` scalar is its value or ``null``; a real ``oneof`` is one key named after
   the oneof holding ``null`` or ``{"<CamelCaseField>": value}`` (serde's external tagging of the
   generated enum);
6. unknown fields are never emitted.

``to_input(message)`` produces that shape from a parsed message (what the agent evaluates).
``normalize(descriptor, partial)`` turns a *partial* request in that shape (genpolicy's
``testcases.json``) into the full one, as kata's harness does by deserialising into
``#[serde(default)]`` structs and serialising again: missing fields get defaults, unknown keys are
dropped, wrong types are refused. ``CopyFileRequest`` is rewritten to kata's
``PolicyCopyFileRequest`` before evaluation (``copy_file_input`` / ``normalize_copy_file``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from trustpod.agent.serde_emit import to_input
from trustpod.agent.serde_plan import (
    FLOATS,
    MESSAGE,
    ONEOF,
    OPTIONAL,
    RUST_KEYWORDS,
    FieldPlan,
    oneof_variant,
    plan,
    rust_name,
)
from trustpod.errors import EvidenceError

__all__ = [
    "COPY_FILE_REQUEST",
    "MAX_INPUT_DEPTH",
    "RUST_KEYWORDS",
    "copy_file_input",
    "from_input",
    "normalize",
    "normalize_copy_file",
    "oneof_variant",
    "rust_name",
    "to_input",
]

#: Nesting limit for partial requests (kata's messages nest < 10 deep).
MAX_INPUT_DEPTH = 32
#: The request whose policy input is kata's ``PolicyCopyFileRequest``, not the message itself.
COPY_FILE_REQUEST = "CopyFileRequest"

_S_IFMT = 0o170000
_FILE_TYPES = {0o100000: "Regular", 0o040000: "Directory", 0o120000: "Symlink"}
_INT_RANGES: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


# --- partial serde JSON -> full serde JSON -----------------------------------------------------


def _bad(path: str, what: str) -> EvidenceError:
    return EvidenceError(
        f"request field {path or '<root>'}: {what}",
        reason="agent_policy.input",
        fix="write the request in kata's serde shape (proto field names, enums as integers)",
    )


def _default(f: FieldDescriptor) -> Any:
    if f.type == FieldDescriptor.TYPE_BYTES:
        return []
    if f.type == FieldDescriptor.TYPE_ENUM:
        return 0
    return f.default_value


def _norm_value(f: FieldDescriptor, v: Any, path: str, depth: int) -> Any:
    t = f.type
    if t == FieldDescriptor.TYPE_MESSAGE:
        if not isinstance(v, Mapping):
            raise _bad(path, "expected an object")
        assert f.message_type is not None
        return _norm_message(f.message_type, v, path, depth + 1)
    if t == FieldDescriptor.TYPE_BOOL:
        if not isinstance(v, bool):
            raise _bad(path, "expected true or false")
        return v
    if t == FieldDescriptor.TYPE_STRING:
        if not isinstance(v, str):
            raise _bad(path, "expected a string")
        return v
    if t == FieldDescriptor.TYPE_BYTES:
        if not isinstance(v, list) or not all(
            isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in v
        ):
            raise _bad(path, "expected an array of integers 0..255 (bytes)")
        return list(v)
    if t in FLOATS:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _bad(path, "expected a number")
        return float(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(path, "expected an integer")
    lo, hi = _INT_RANGES[t]
    if not lo <= v <= hi:
        raise _bad(path, f"integer {v} out of range {lo}..{hi}")
    return v


def _norm_field(item: FieldPlan, v: Any, path: str, depth: int) -> Any:
    if item.kind == ONEOF:
        if v is None:
            return None
        if not isinstance(v, Mapping) or len(v) != 1:
            raise _bad(path, f"expected null or one of {sorted(item.variants)}")
        ((variant, inner),) = v.items()
        member = item.variants.get(variant)
        if member is None:
            raise _bad(
                path, f"unknown variant {variant!r}, expected one of {sorted(item.variants)}"
            )
        return {variant: _norm_value(member, inner, f"{path}.{variant}", depth)}
    f = item.desc
    assert f is not None
    if item.map_value is not None:
        if not isinstance(v, Mapping):
            raise _bad(path, "expected an object (map)")
        mv = item.map_value
        return {str(k): _norm_value(mv, x, f"{path}.{k}", depth) for k, x in v.items()}
    if item.repeated:
        if not isinstance(v, list):
            raise _bad(path, "expected an array")
        return [_norm_value(f, x, f"{path}[{i}]", depth) for i, x in enumerate(v)]
    if item.kind in (MESSAGE, OPTIONAL) and v is None:
        return None
    return _norm_value(f, v, path, depth)


def _norm_message(desc: Descriptor, partial: Mapping[str, Any], path: str, depth: int) -> Any:
    if depth > MAX_INPUT_DEPTH:
        raise _bad(path, f"nested deeper than {MAX_INPUT_DEPTH}")
    out: dict[str, Any] = {}
    for item in plan(desc):
        sub = f"{path}.{item.key}" if path else item.key
        if item.key in partial:
            out[item.key] = _norm_field(item, partial[item.key], sub, depth)
        elif item.kind in (ONEOF, MESSAGE, OPTIONAL) and not item.repeated:
            out[item.key] = None
        elif item.map_value is not None:
            out[item.key] = {}
        elif item.repeated:
            out[item.key] = []
        else:
            assert item.desc is not None
            out[item.key] = _default(item.desc)
    return out


def normalize(descriptor: Descriptor, partial: Mapping[str, Any]) -> dict[str, Any]:
    """The full serde shape of a partial request: defaults filled, unknown keys dropped."""
    if not isinstance(partial, Mapping):
        raise _bad("", "expected an object")
    result: dict[str, Any] = _norm_message(descriptor, partial, "", 0)
    return result


# --- CopyFileRequest -> PolicyCopyFileRequest --------------------------------------------------


def _file_type(mode: int) -> str:
    return _FILE_TYPES.get(mode & _S_IFMT, "Unknown")


def copy_file_input(message: Message) -> dict[str, Any]:
    """Kata's ``PolicyCopyFileRequest`` of a ``CopyFileRequest``: ``file_type`` from S_IFMT,
    ``symlink_target`` the UTF-8 ``data`` of a symlink (else null), ``data`` dropped."""
    mode = int(getattr(message, "file_mode"))  # noqa: B009 - generated message attribute
    ftype = _file_type(mode)
    target: str | None = None
    if ftype == "Symlink":
        try:
            target = bytes(getattr(message, "data")).decode("utf-8")  # noqa: B009
        except UnicodeDecodeError as exc:
            raise EvidenceError(
                "CopyFileRequest: invalid symlink content (not UTF-8)",
                reason="agent_policy.copy_file",
            ) from exc
    return {
        "path": str(getattr(message, "path")),  # noqa: B009
        "file_type": ftype,
        "symlink_target": target,
        "file_size": int(getattr(message, "file_size")),  # noqa: B009
        "file_mode": mode,
        "dir_mode": int(getattr(message, "dir_mode")),  # noqa: B009
        "uid": int(getattr(message, "uid")),  # noqa: B009
        "gid": int(getattr(message, "gid")),  # noqa: B009
        "offset": int(getattr(message, "offset")),  # noqa: B009
    }


_COPY_FIELDS: tuple[tuple[str, str, int, int], ...] = (
    ("file_size", "i64", -(2**63), 2**63 - 1),
    ("file_mode", "u32", 0, 2**32 - 1),
    ("dir_mode", "u32", 0, 2**32 - 1),
    ("uid", "i32", -(2**31), 2**31 - 1),
    ("gid", "i32", -(2**31), 2**31 - 1),
    ("offset", "i64", -(2**63), 2**63 - 1),
)


def normalize_copy_file(partial: Mapping[str, Any]) -> dict[str, Any]:
    """A partial ``PolicyCopyFileRequest`` with kata's ``#[serde(default)]`` defaults filled."""
    if not isinstance(partial, Mapping):
        raise _bad("", "expected an object")
    path = partial.get("path", "")
    if not isinstance(path, str):
        raise _bad("path", "expected a string")
    ftype = partial.get("file_type", "Unknown")
    if ftype not in ("Unknown", "Regular", "Directory", "Symlink"):
        raise _bad("file_type", "expected Unknown, Regular, Directory or Symlink")
    target = partial.get("symlink_target")
    if target is not None and not isinstance(target, str):
        raise _bad("symlink_target", "expected a string or null")
    out: dict[str, Any] = {"path": path, "file_type": ftype, "symlink_target": target}
    for name, kind, lo, hi in _COPY_FIELDS:
        v = partial.get(name, 0)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise _bad(name, f"expected an integer ({kind})")
        out[name] = v
    return out


# --- full serde JSON -> message (host-side tools, tests) ---------------------------------------


def _set_value(msg: Message, f: FieldDescriptor, v: Any) -> None:
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        sub = getattr(msg, f.name)
        sub.SetInParent()
        from_input(sub, v)
    elif f.type == FieldDescriptor.TYPE_BYTES:
        setattr(msg, f.name, bytes(v))
    else:
        setattr(msg, f.name, v)


def from_input(message: Message, full: Mapping[str, Any]) -> Message:
    """Fill ``message`` from a request in the full serde shape (``normalize``'s output); the
    inverse of ``to_input``. Returns ``message``."""
    desc: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    for item in plan(desc):
        v = full.get(item.key)
        if item.kind == ONEOF:
            if v is not None:
                ((variant, inner),) = v.items()
                _set_value(message, item.variants[variant], inner)
            continue
        f = item.desc
        assert f is not None
        if item.map_value is not None:
            target = getattr(message, f.name)
            for k, x in (v or {}).items():
                if item.map_value.type == FieldDescriptor.TYPE_MESSAGE:
                    from_input(target[k], x)
                else:
                    target[k] = bytes(x) if item.map_value.type == FieldDescriptor.TYPE_BYTES else x
        elif item.repeated:
            target = getattr(message, f.name)
            for x in v or []:
                if f.type == FieldDescriptor.TYPE_MESSAGE:
                    from_input(target.add(), x)
                else:
                    target.append(bytes(x) if f.type == FieldDescriptor.TYPE_BYTES else x)
        elif v is None:
            continue
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(message, f.name).SetInParent()
            from_input(getattr(message, f.name), v)
        else:
            _set_value(message, f, v)
    return message
