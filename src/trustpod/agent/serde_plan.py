"""Per-descriptor field plans of kata's serde shape (pure; shared by ``serde``/``serde_emit``).

A plan lists, for one message type, the serde key of each field (proto name, ``_``-suffixed for a
Rust keyword), its kind (scalar, enum, bytes, message, proto3 ``optional``, real ``oneof``),
whether it is repeated and, for a map, the value's descriptor. Plans are built once per
descriptor and cached.
"""

from __future__ import annotations

import threading

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

__all__ = [
    "BYTES",
    "ENUM",
    "FLOATS",
    "MESSAGE",
    "ONEOF",
    "OPTIONAL",
    "RUST_KEYWORDS",
    "SCALAR",
    "FieldPlan",
    "oneof_variant",
    "plan",
    "rust_name",
]

#: Rust keywords (strict + reserved); rust-protobuf suffixes a field with such a name with ``_``.
RUST_KEYWORDS = frozenset(
    "as async await break const continue crate dyn else enum extern false fn for if impl in let "
    "loop match mod move mut pub ref return self static struct super trait true type unsafe use "
    "where while abstract become box do final macro override priv typeof unsized virtual yield "
    "try gen".split()
)

FLOATS = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)


def rust_name(proto_name: str) -> str:
    """The serde key of a field: the proto name, ``_``-suffixed when it is a Rust keyword."""
    return proto_name + "_" if proto_name in RUST_KEYWORDS else proto_name


def oneof_variant(field_name: str) -> str:
    """rust-protobuf's enum variant for a oneof member: the field name in CamelCase."""
    return "".join(part[:1].upper() + part[1:] for part in field_name.split("_"))


# --- per-descriptor plans (cached: the agent converts every request) -------------------------

SCALAR, ENUM, BYTES, MESSAGE, OPTIONAL, ONEOF = range(6)


class FieldPlan:
    __slots__ = ("desc", "key", "kind", "map_value", "repeated", "variants")

    def __init__(self, key: str, kind: int, desc: FieldDescriptor | None) -> None:
        self.key = key
        self.kind = kind
        self.desc = desc
        self.repeated = False
        self.map_value: FieldDescriptor | None = None
        self.variants: dict[str, FieldDescriptor] = {}


_PLANS: dict[str, tuple[FieldPlan, ...]] = {}
_PLANS_LOCK = threading.Lock()


def _synthetic_oneofs(desc: Descriptor) -> frozenset[str]:
    proto = descriptor_pb2.DescriptorProto()
    desc.CopyToProto(proto)
    names = {f.name for f in proto.field if f.proto3_optional}
    return frozenset(
        o.name for o in desc.oneofs if len(o.fields) == 1 and o.fields[0].name in names
    )


def _base_kind(f: FieldDescriptor) -> int:
    if f.type == FieldDescriptor.TYPE_MESSAGE or f.type == FieldDescriptor.TYPE_GROUP:
        return MESSAGE
    if f.type == FieldDescriptor.TYPE_ENUM:
        return ENUM
    if f.type == FieldDescriptor.TYPE_BYTES:
        return BYTES
    return SCALAR


def plan(desc: Descriptor) -> tuple[FieldPlan, ...]:
    got = _PLANS.get(desc.full_name)
    if got is not None:
        return got
    synthetic = _synthetic_oneofs(desc)
    out: list[FieldPlan] = []
    seen_oneofs: set[str] = set()
    for f in desc.fields:
        oneof = f.containing_oneof
        if oneof is not None and oneof.name in synthetic:
            item = FieldPlan(rust_name(f.name), OPTIONAL, f)
        elif oneof is not None:
            if oneof.name in seen_oneofs:
                continue
            seen_oneofs.add(oneof.name)
            item = FieldPlan(rust_name(oneof.name), ONEOF, None)
            item.variants = {oneof_variant(m.name): m for m in oneof.fields}
        else:
            item = FieldPlan(rust_name(f.name), _base_kind(f), f)
            item.repeated = f.is_repeated
            mt = f.message_type
            if item.repeated and mt is not None and mt.GetOptions().map_entry:
                item.map_value = mt.fields_by_name["value"]
        out.append(item)
    made = tuple(out)
    with _PLANS_LOCK:
        _PLANS[desc.full_name] = made
    return made
