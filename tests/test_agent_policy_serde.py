"""Kata's serde JSON shape of agent requests (pods-images-gpu.md §1.1), from descriptors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.agent.serde import (
    copy_file_input,
    normalize,
    normalize_copy_file,
    oneof_variant,
    rust_name,
    to_input,
)
from trustpod.errors import EvidenceError

FD = descriptor_pb2.FieldDescriptorProto


def _test_messages() -> tuple[Any, Any]:
    """A small proto3 file exercising every construct kata's messages use."""
    f = descriptor_pb2.FileDescriptorProto(name="serde_test.proto", package="t", syntax="proto3")
    fam = f.enum_type.add(name="Family")
    fam.value.add(name="V4", number=0)
    fam.value.add(name="V6", number=1)
    inner = f.message_type.add(name="Inner")
    inner.field.add(name="x", number=1, type=FD.TYPE_STRING, label=FD.LABEL_OPTIONAL)
    inner.field.add(name="n", number=2, type=FD.TYPE_UINT64, label=FD.LABEL_OPTIONAL)
    m = f.message_type.add(name="Outer")
    add = m.field.add
    add(name="type", number=1, type=FD.TYPE_STRING, label=FD.LABEL_OPTIONAL)
    add(name="family", number=2, type=FD.TYPE_ENUM, type_name=".t.Family", label=FD.LABEL_OPTIONAL)
    add(name="Inner", number=3, type=FD.TYPE_MESSAGE, type_name=".t.Inner", label=FD.LABEL_OPTIONAL)
    add(name="data", number=4, type=FD.TYPE_BYTES, label=FD.LABEL_OPTIONAL)
    add(name="errnoret", number=5, type=FD.TYPE_UINT32, label=FD.LABEL_OPTIONAL, oneof_index=0)
    add(
        name="swap",
        number=6,
        type=FD.TYPE_BOOL,
        label=FD.LABEL_OPTIONAL,
        proto3_optional=True,
        oneof_index=1,
    )
    entry = m.nested_type.add(name="AnnotationsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=FD.TYPE_STRING, label=FD.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=FD.TYPE_STRING, label=FD.LABEL_OPTIONAL)
    add(
        name="Annotations",
        number=7,
        type=FD.TYPE_MESSAGE,
        type_name=".t.Outer.AnnotationsEntry",
        label=FD.LABEL_REPEATED,
    )
    add(name="Args", number=8, type=FD.TYPE_STRING, label=FD.LABEL_REPEATED)
    add(
        name="items",
        number=9,
        type=FD.TYPE_MESSAGE,
        type_name=".t.Inner",
        label=FD.LABEL_REPEATED,
    )
    add(name="OOMScoreAdj", number=10, type=FD.TYPE_INT64, label=FD.LABEL_OPTIONAL)
    add(name="ok", number=11, type=FD.TYPE_BOOL, label=FD.LABEL_OPTIONAL)
    m.oneof_decl.add(name="ErrnoRet")
    m.oneof_decl.add(name="_swap")
    cf = f.message_type.add(name="CopyFileRequest")
    for i, (name, t) in enumerate(
        [
            ("path", FD.TYPE_STRING),
            ("file_size", FD.TYPE_INT64),
            ("file_mode", FD.TYPE_UINT32),
            ("dir_mode", FD.TYPE_UINT32),
            ("uid", FD.TYPE_INT32),
            ("gid", FD.TYPE_INT32),
            ("offset", FD.TYPE_INT64),
            ("data", FD.TYPE_BYTES),
        ],
        start=1,
    ):
        cf.field.add(name=name, number=i, type=t, label=FD.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    outer = message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Outer"))
    copy = message_factory.GetMessageClass(pool.FindMessageTypeByName("t.CopyFileRequest"))
    return outer, copy


Outer, CopyFile = _test_messages()

EMPTY = {
    "type_": "",
    "family": 0,
    "Inner": None,
    "data": [],
    "ErrnoRet": None,
    "swap": None,
    "Annotations": {},
    "Args": [],
    "items": [],
    "OOMScoreAdj": 0,
    "ok": False,
}


def test_names() -> None:
    assert rust_name("type") == "type_"
    assert rust_name("container_id") == "container_id"
    assert rust_name("OCI") == "OCI"
    assert oneof_variant("errnoret") == "Errnoret"
    assert oneof_variant("foo_bar") == "FooBar"


def test_empty_message_has_every_field_with_defaults() -> None:
    assert to_input(Outer()) == EMPTY
    assert normalize(Outer.DESCRIPTOR, {}) == EMPTY


def test_set_message() -> None:
    m = Outer(type="bind", family=1, data=b"\x00\xff", errnoret=1, swap=False, OOMScoreAdj=-998)
    m.Inner.x = "y"
    m.Annotations["io.kubernetes.cri.container-type"] = "container"
    m.Args.extend(["sleep", "3600"])
    m.items.add(n=2**64 - 1)
    got = to_input(m)
    assert got == {
        **EMPTY,
        "type_": "bind",
        "family": 1,
        "Inner": {"x": "y", "n": 0},
        "data": [0, 255],
        "ErrnoRet": {"Errnoret": 1},
        "swap": False,
        "Annotations": {"io.kubernetes.cri.container-type": "container"},
        "Args": ["sleep", "3600"],
        "items": [{"x": "", "n": 2**64 - 1}],
        "OOMScoreAdj": -998,
    }
    # the full shape is a fixed point of the normaliser
    assert normalize(Outer.DESCRIPTOR, got) == got
    # and JSON has integers for 64-bit values (not protobuf-JSON strings)
    assert '"n": 18446744073709551615' in json.dumps(got)


def test_normalize_drops_unknown_and_fills_nested() -> None:
    got = normalize(Outer.DESCRIPTOR, {"Inner": {"x": "a", "pciPath": "x"}, "stale": 1})
    assert got == {**EMPTY, "Inner": {"x": "a", "n": 0}}


@pytest.mark.parametrize(
    "bad",
    [
        {"type_": 1},
        {"family": "V6"},
        {"family": True},
        {"data": "AAE="},
        {"data": [256]},
        {"Args": None},
        {"Args": "sleep"},
        {"Inner": []},
        {"ok": 1},
        {"OOMScoreAdj": 1.5},
        {"items": [{"n": -1}]},
        {"ErrnoRet": {"Other": 1}},
        {"ErrnoRet": 3},
        {"Annotations": []},
    ],
)
def test_normalize_refuses_wrong_types(bad: dict[str, Any]) -> None:
    with pytest.raises(EvidenceError) as exc:
        normalize(Outer.DESCRIPTOR, bad)
    assert exc.value.reason == "agent_policy.input"


def test_normalize_refuses_non_object() -> None:
    with pytest.raises(EvidenceError):
        normalize(Outer.DESCRIPTOR, [])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mode", "ftype"),
    [
        (0o100644, "Regular"),
        (0o040755, "Directory"),
        (0o140000, "Unknown"),  # socket
        (0o040000 | 0o100000, "Unknown"),
        (0o170000, "Unknown"),
        (0, "Unknown"),
    ],
)
def test_copy_file_types(mode: int, ftype: str) -> None:
    got = copy_file_input(CopyFile(path="/foo", file_mode=mode, data=b"content"))
    assert got == {
        "path": "/foo",
        "file_type": ftype,
        "symlink_target": None,
        "file_size": 0,
        "file_mode": mode,
        "dir_mode": 0,
        "uid": 0,
        "gid": 0,
        "offset": 0,
    }
    assert "data" not in got


def test_copy_file_symlink() -> None:
    got = copy_file_input(CopyFile(path="/l", file_mode=0o120777, data=b"..data/foo"))
    assert got["file_type"] == "Symlink" and got["symlink_target"] == "..data/foo"
    with pytest.raises(EvidenceError):
        copy_file_input(CopyFile(file_mode=0o120777, data=b"\x00\xff\xff\x00"))


def test_normalize_copy_file() -> None:
    assert normalize_copy_file({"path": "/a", "file_type": "Regular"}) == {
        "path": "/a",
        "file_type": "Regular",
        "symlink_target": None,
        "file_size": 0,
        "file_mode": 0,
        "dir_mode": 0,
        "uid": 0,
        "gid": 0,
        "offset": 0,
    }
    for bad in ({"file_type": "Fifo"}, {"uid": "0"}, {"path": 1}, {"symlink_target": 3}):
        with pytest.raises(EvidenceError):
            normalize_copy_file(bad)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=12,
)
_keys = st.sampled_from([*sorted(EMPTY), "pciPath", "x", "n"])
_partial = st.dictionaries(_keys, _json, max_size=6)


@settings(max_examples=300, deadline=None)
@given(_partial)
def test_normalizer_total_and_idempotent(partial: dict[str, Any]) -> None:
    """Any JSON object either normalises to the full shape (a fixed point, every key present,
    round-trippable through protobuf) or is refused with EvidenceError; nothing else escapes."""
    try:
        full = normalize(Outer.DESCRIPTOR, partial)
    except EvidenceError:
        return
    assert set(full) == set(EMPTY)
    assert normalize(Outer.DESCRIPTOR, full) == full
    msg = Outer()
    for key, value in full.items():
        field = key[:-1] if key == "type_" else key
        if value is None or key == "ErrnoRet":
            continue
        if key == "Annotations":
            msg.Annotations.update(value)
        elif key == "Inner":
            msg.Inner.x, msg.Inner.n = value["x"], value["n"]
        elif key == "items":
            for item in value:
                msg.items.add(**item)
        elif key == "data":
            msg.data = bytes(value)
        elif key == "Args":
            msg.Args.extend(value)
        else:
            setattr(msg, field, value)
    if full["ErrnoRet"] is not None:
        msg.errnoret = full["ErrnoRet"]["Errnoret"]
    assert to_input(msg) == full


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        Outer,
        type=st.text(max_size=4),
        family=st.sampled_from([0, 1]),
        data=st.binary(max_size=4),
        OOMScoreAdj=st.integers(-(2**63), 2**63 - 1),
        Args=st.lists(st.text(max_size=3), max_size=3),
    )
)
def test_message_shape_is_normal(msg: Any) -> None:
    full = to_input(msg)
    assert normalize(Outer.DESCRIPTOR, json.loads(json.dumps(full))) == full


def test_agent_protos_match_kata_testcase_shapes() -> None:
    """Against the agent's own descriptors: a CreateContainerRequest in the shape of genpolicy's
    test data (written here from §1.2) is already normal, and a partial one gets kata's nulls."""
    from trustpod.agent.pb import protos

    desc = protos().pool.FindMessageTypeByName("grpc.CreateContainerRequest")
    full = normalize(desc, {"container_id": "c1", "OCI": {"Version": "1.1.0"}})
    assert full["string_user"] is None
    assert full["storages"] == [] and full["devices"] == [] and full["shared_mounts"] == []
    assert full["sandbox_pidns"] is False and full["stdin_port"] == 0
    oci = full["OCI"]
    assert oci["Hooks"] is None and oci["Process"] is None and oci["Annotations"] == {}
    mount = normalize(desc, {"OCI": {"Mounts": [{"destination": "/proc", "type_": "proc"}]}})
    assert mount["OCI"]["Mounts"][0] == {
        "destination": "/proc",
        "source": "",
        "type_": "proc",
        "options": [],
    }
    exec_desc = protos().pool.FindMessageTypeByName("grpc.ExecProcessRequest")
    ex = normalize(exec_desc, {"container_id": "c", "process": {"Args": ["ls"]}})
    assert ex["string_user"] is None and ex["process"]["Capabilities"] is None


def _wrap(name: str) -> Any:
    return lambda v: {name: v}


def _strategy(desc: Any, depth: int = 0) -> Any:
    """Partial requests in serde shape for any message type, from its descriptor."""
    from google.protobuf.descriptor import FieldDescriptor as F

    from trustpod.agent.serde import oneof_variant as variant

    def scalar(f: Any) -> Any:
        if f.type == F.TYPE_MESSAGE:
            return _strategy(f.message_type, depth + 1)
        if f.type == F.TYPE_STRING:
            return st.text(max_size=4)
        if f.type == F.TYPE_BOOL:
            return st.booleans()
        if f.type == F.TYPE_BYTES:
            return st.lists(st.integers(0, 255), max_size=4)
        if f.type in (F.TYPE_UINT32, F.TYPE_FIXED32):
            return st.integers(0, 2**32 - 1)
        if f.type in (F.TYPE_UINT64, F.TYPE_FIXED64):
            return st.integers(0, 2**64 - 1)
        if f.type in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
            return st.integers(-(2**63), 2**63 - 1)
        return st.integers(-(2**31), 2**31 - 1)

    optional: dict[str, Any] = {}
    if depth > 4:
        return st.just({})
    for f in desc.fields:
        oneof = f.containing_oneof
        key = rust_name(f.name)
        if oneof is not None and oneof.name == f"_{f.name}":  # proto3 optional
            optional[key] = st.none() | scalar(f)
            continue
        if oneof is not None:
            optional[rust_name(oneof.name)] = st.none() | scalar(f).map(_wrap(variant(f.name)))
            continue
        mt = f.message_type
        if f.is_repeated and mt is not None and mt.GetOptions().map_entry:
            optional[key] = st.dictionaries(
                st.text(max_size=3), scalar(mt.fields_by_name["value"]), max_size=2
            )
        elif f.is_repeated:
            optional[key] = st.lists(scalar(f), max_size=2)
        elif f.type == f.TYPE_MESSAGE:
            optional[key] = st.none() | scalar(f)
        else:
            optional[key] = scalar(f)
    return st.fixed_dictionaries({}, optional=optional)


_REQUESTS = (
    "CreateContainerRequest",
    "ExecProcessRequest",
    "UpdateInterfaceRequest",
    "UpdateRoutesRequest",
    "CreateSandboxRequest",
    "WriteStreamRequest",
)


@pytest.mark.parametrize("name", _REQUESTS)
def test_real_agent_messages_round_trip(name: str) -> None:
    """On the agent's own messages: normalise(partial) -> protobuf message -> to_input gives the
    same JSON, and it survives protobuf's wire encoding (so what a shim sends is what the policy
    sees)."""
    from trustpod.agent.pb import protos
    from trustpod.agent.serde import from_input

    cls = getattr(protos().grpc, name)

    @settings(max_examples=60, deadline=None)
    @given(_strategy(cls.DESCRIPTOR))
    def check(partial: dict[str, Any]) -> None:
        full = normalize(cls.DESCRIPTOR, partial)
        msg = from_input(cls(), full)
        wire = cls.FromString(msg.SerializeToString())
        assert to_input(wire) == full

    check()


def test_compiled_converters_agree_with_the_normalizer_on_every_agent_message() -> None:
    """``to_input`` (one compiled converter per message type) and ``normalize`` (a generic walk
    of the same plans) are independent: an empty message of every agent type converts to exactly
    the all-defaults document, and a populated CreateContainerRequest is already normal."""
    from trustpod.agent.pb import protos

    pool = protos().pool
    service = pool.FindServiceByName("grpc.AgentService")
    for method in service.methods:
        desc = method.input_type
        msg = message_factory.GetMessageClass(desc)()
        assert to_input(msg) == normalize(desc, {}), desc.full_name
    pb = protos().grpc
    req = pb.CreateContainerRequest(container_id="c1", exec_id="c1", sandbox_pidns=True)
    req.OCI.Annotations["k"] = "v"
    req.OCI.Process.Args.extend(["sh", "-c", "true"])
    req.OCI.Process.User.SetInParent()
    req.OCI.Linux.Namespaces.add(Type="ipc")
    req.OCI.Linux.Resources.Memory.Limit = 1 << 30
    req.storages.add(driver="image_guest_pull", source="r/i@sha256:" + "0" * 64)
    full = to_input(req)
    assert normalize(req.DESCRIPTOR, json.loads(json.dumps(full))) == full
    assert full["OCI"]["Linux"]["Resources"]["Memory"]["Limit"] == 1 << 30
    assert full["OCI"]["Hooks"] is None and full["string_user"] is None
