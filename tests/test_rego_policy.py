"""trustpod.rego.RegoPolicy on regorus: undefined vs false vs null, data, prints, limits, threads,
Rego v0, extensions, and the constructs of kata genpolicy's rules.rego (our own text)."""

from __future__ import annotations

import gc
import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.errors import ConfigError, EvidenceError, PolicyDenied
from trustpod.rego import UNDEFINED, PolicyLimits, RegoPolicy, Undefined
from trustpod.rego.values import nesting_depth

AGENT = """package agent_policy
import rego.v1

default CreateContainerRequest := false
CreateContainerRequest if {
    input.ok
    print("create", input.name)
}
nothing := null
only_bob := 1 if input.name == "bob"
names := {n | some n in input.names}
limit := data.limit
"""
RULE = "data.agent_policy.CreateContainerRequest"


@pytest.fixture(scope="module")
def agent() -> RegoPolicy:
    return RegoPolicy({"rules.rego": AGENT}, data={"limit": 3}, gather_prints=True)


def test_false_null_undefined_are_distinct(agent: RegoPolicy) -> None:
    assert agent.evaluate(RULE, {"ok": True, "name": "a"}) is True
    assert agent.evaluate(RULE, {"ok": False}) is False
    got = agent.evaluate_many(
        [
            "data.agent_policy.nothing",
            "data.agent_policy.only_bob",
            "data.agent_policy.not_a_rule",
            "data.other_package.x",
        ],
        {},
    )
    assert got["data.agent_policy.nothing"] is None
    assert got["data.agent_policy.only_bob"] is UNDEFINED
    assert got["data.agent_policy.not_a_rule"] is UNDEFINED
    assert got["data.other_package.x"] is UNDEFINED
    assert not UNDEFINED and Undefined() is UNDEFINED and repr(UNDEFINED) == "UNDEFINED"
    assert agent.evaluate("data.agent_policy.only_bob", {"name": "bob"}) == 1


def test_string_value_that_looks_like_undefined_is_kept() -> None:
    p = RegoPolicy('package p\ns := "<undefined>"\n')
    assert p.evaluate("data.p.s") == "<undefined>"


def test_sets_come_back_as_json_lists(agent: RegoPolicy) -> None:
    assert agent.evaluate("data.agent_policy.names", {"names": ["b", "a", "b"]}) == ["a", "b"]


def test_input_json_and_mapping_agree(agent: RegoPolicy) -> None:
    doc = {"ok": True, "name": "x"}
    assert agent.evaluate(RULE, input_json=json.dumps(doc)) is agent.evaluate(RULE, doc)


def test_prints_are_gathered_per_evaluation(agent: RegoPolicy) -> None:
    run = agent.run([RULE], {"ok": True, "name": "pause"})
    assert run.values[RULE] is True and run.prints == ("rules.rego:7: create pause",)
    assert agent.run([RULE], {"ok": False}).prints == ()


def test_data_added_once_and_replaced_per_query(agent: RegoPolicy) -> None:
    assert agent.evaluate("data.agent_policy.limit") == 3
    assert agent.evaluate("data.agent_policy.limit", data_json='{"limit": 9}') == 9
    assert agent.evaluate("data.agent_policy.limit") == 3  # the policy's own data again
    with pytest.raises(PolicyDenied):
        agent.evaluate("data.agent_policy.limit", data_json="{not json")
    assert agent.evaluate("data.agent_policy.limit") == 3


def test_errors_fail_closed_with_the_engine_message() -> None:
    p = RegoPolicy(
        "package p\nimport rego.v1\nd := 1 / input.z\nc := 1 if input.a\nc := 2 if input.a\n"
        "b := base64.decode(input.s)\n"
    )
    for rule, text in (("d", "divide by zero"), ("c", "conflict"), ("b", "")):
        with pytest.raises(PolicyDenied) as exc:
            p.evaluate(f"data.p.{rule}", {"z": 0, "a": True, "s": "!!"})
        assert exc.value.reason == "rego.error" and text in exc.value.message
        assert "Stack backtrace" not in exc.value.message
    with pytest.raises(PolicyDenied, match="not JSON"):
        p.evaluate("data.p.d", {"z": {1, 2}})
    with pytest.raises(PolicyDenied, match="not JSON"):
        p.evaluate("data.p.d", input_json="{")


def test_parse_error_is_whole() -> None:
    with pytest.raises(EvidenceError) as exc:
        RegoPolicy({"mine.rego": "package p\nimport rego.v1\nallow if {\n  input.x ==\n}\n"})
    msg = exc.value.message
    assert exc.value.reason == "rego.parse"
    assert msg.startswith("policy does not compile: mine.rego line 5, column 1: expecting expr")
    assert "5 | }" in msg and "^" in msg and "Stack backtrace" not in msg


def test_rego_v0_is_opt_in() -> None:
    text = "package agent\ndefault allow = false\nallow { input.a == 1 }\n"
    with pytest.raises(EvidenceError, match="`if` keyword is required"):
        RegoPolicy(text)
    v0 = RegoPolicy(text, rego_v0=True)
    assert v0.evaluate("data.agent.allow", {"a": 1}) is True
    assert v0.evaluate("data.agent.allow", {"a": 2}) is False


def test_length_limits_are_settings() -> None:
    long_line = 'package p\nx := "' + "a" * 5000 + '"\n'
    with pytest.raises(EvidenceError, match="maximum column width of 1024"):
        RegoPolicy(long_line)
    raised = RegoPolicy(long_line, limits=PolicyLimits(max_col=64 * 1024))
    assert len(raised.evaluate("data.p.x")) == 5000
    many = "package p\n" + "".join(f"x{i} := {i}\n" for i in range(300))
    with pytest.raises(EvidenceError, match="line count"):
        RegoPolicy(many, limits=PolicyLimits(max_lines=100))
    with pytest.raises(EvidenceError, match="file size"):
        RegoPolicy(many, limits=PolicyLimits(max_file_bytes=1000))
    with pytest.raises(ConfigError):
        PolicyLimits(max_lines=0)


def test_several_modules_and_packages() -> None:
    p = RegoPolicy(
        {
            "lib.rego": "package lib\nimport rego.v1\ndouble(x) := 2 * x\n",
            "main.rego": "package main\nimport data.lib\ny := lib.double(input.v)\n",
        }
    )
    assert sorted(p.packages) == ["lib", "main"]
    assert p.evaluate("data.main.y", {"v": 21}) == 42


def test_extension_and_policy_defined_function() -> None:
    calls: list[str] = []

    def lookup(key: str) -> object:
        calls.append(key)
        return {"a": [1, 2]}.get(key)

    ext = {"query_reference_value": (1, lookup)}
    p = RegoPolicy(
        'package p\nr := query_reference_value("a")\nm := query_reference_value("z")\n',
        extensions=ext,
    )
    assert p.evaluate("data.p.r") == [1, 2] and p.evaluate("data.p.m") is None
    assert calls == ["a", "z"]

    def boom(key: str) -> object:
        raise ValueError("rvps down")

    q = RegoPolicy(
        'package p\nr := query_reference_value("a")\n',
        extensions={"query_reference_value": (1, boom)},
    )
    with pytest.raises(PolicyDenied, match="rvps down"):
        q.evaluate("data.p.r")


# kata genpolicy rules.rego style (our own text): multi-line comprehensions with `some k, _ in`,
# `every`, `contains`, functions with several bodies, `print`, object.get, regex, startswith.
GENPOLICY_STYLE = """package agent_policy

import future.keywords.contains
import future.keywords.every
import future.keywords.if
import future.keywords.in

default CreateContainerRequest := {"allowed": false}

CreateContainerRequest := {"ops": ops, "allowed": true} if {
    i_oci := input.OCI
    some p_container in policy_data.containers
    allow_annotations(p_container.OCI, i_oci)
    every env in i_oci.Process.Env {
        allow_env(env)
    }
    ops := [{"op": "add", "path": "/pstate/sandbox", "value": i_oci.Annotations[S_NAME_KEY]}]
}

S_NAME_KEY := "io.kubernetes.cri.sandbox-name"

allow_annotations(p_oci, i_oci) if {
    i_keys := object.keys(i_oci.Annotations)
    suffixes := [suffix |
        some key, _ in i_oci.Annotations
        startswith(key, "io.katacontainers.pkg.oci.")
        suffix := trim_prefix(key, "io.katacontainers.pkg.oci.")
    ]
    print("allow_annotations: suffixes", suffixes)
    count(suffixes) == 0
    every k in i_keys {
        allowed_key(p_oci, k)
    }
}

allowed_key(p_oci, k) if {
    object.get(p_oci.Annotations, k, null) != null
}

allowed_key(_, k) if {
    regex.match(`^io\\.kubernetes\\.cri\\..*$`, k)
}

allow_env(env) if {
    some allowed in policy_data.common.env_allowed
    startswith(env, allowed)
}

bad_mounts contains m if {
    some m in input.OCI.Mounts
    not m.destination in {d | some d in policy_data.common.mount_destinations}
}

policy_data := {
    "containers": [{"OCI": {"Annotations": {"io.kubernetes.cri.container-type": "sandbox"}}}],
    "common": {"env_allowed": ["PATH=", "HOSTNAME="], "mount_destinations": ["/etc/hosts"]},
}
"""


@pytest.mark.parametrize("rego_v0", [True, False])
def test_genpolicy_style_constructs_load_and_evaluate(rego_v0: bool) -> None:
    p = RegoPolicy(
        {"rules.rego": GENPOLICY_STYLE},
        rego_v0=rego_v0,
        limits=PolicyLimits(max_col=64 * 1024, max_file_bytes=16 << 20, max_lines=200_000),
        gather_prints=True,
    )
    oci = {
        "Annotations": {
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-name": "pod-1",
        },
        "Process": {"Env": ["PATH=/bin", "HOSTNAME=x"]},
        "Mounts": [{"destination": "/etc/hosts"}, {"destination": "/proc"}],
    }
    run = p.run([RULE, "data.agent_policy.bad_mounts"], {"OCI": oci})
    assert run.values[RULE] == {
        "allowed": True,
        "ops": [{"op": "add", "path": "/pstate/sandbox", "value": "pod-1"}],
    }
    assert run.values["data.agent_policy.bad_mounts"] == [{"destination": "/proc"}]
    assert any("allow_annotations: suffixes" in line for line in run.prints)
    smuggled = {**oci, "Annotations": {**oci["Annotations"], "io.katacontainers.pkg.oci.x": "1"}}
    assert p.evaluate(RULE, {"OCI": smuggled}) == {"allowed": False}
    bad_env = {**oci, "Process": {"Env": ["LD_PRELOAD=/x.so"]}}
    assert p.evaluate(RULE, {"OCI": bad_env}) == {"allowed": False}


def test_threads_get_their_own_engines_and_drop_them_cleanly(
    agent: RegoPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A regorus Engine is unsendable: touched or dropped on another thread, pyo3 complains
    # (a panic, or an "unraisable" error at drop). Errors raised on worker threads are kept
    # past the threads' end (their tracebacks must not pin an engine), then collected here.
    unraisable: list[str] = []
    monkeypatch.setattr("sys.unraisablehook", lambda u: unraisable.append(repr(u.exc_value)))
    errors: list[object] = []
    kept: list[BaseException] = []
    div = RegoPolicy("package d\nimport rego.v1\nx := 1 / input.z\n")

    def worker(i: int) -> None:
        try:
            for n in range(100):
                ok = (i + n) % 2 == 0
                if agent.evaluate(RULE, {"ok": ok, "name": "t"}) is not ok:
                    errors.append((i, n))
                if agent.evaluate("data.agent_policy.limit", data_json=f'{{"limit": {i}}}') != i:
                    errors.append(("data", i))
            for bad in (lambda: div.evaluate("data.d.x", {"z": 0}), lambda: RegoPolicy("package")):
                try:
                    bad()
                except (PolicyDenied, EvidenceError) as exc:
                    kept.append(exc)
        except Exception as exc:  # a pyo3 "unsendable" panic would land here
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(kept) == 8
    kept.clear()
    gc.collect()
    assert errors == [] and unraisable == []


@settings(max_examples=40, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=4),
        max_leaves=12,
    )
)
def test_input_round_trips_as_json(value: object) -> None:
    assert _ECHO.evaluate("data.echo.v", {"v": value}) == value
    assert _ECHO.evaluate("data.echo.v", input_json=json.dumps({"v": value})) == value


_ECHO = RegoPolicy("package echo\nimport rego.v1\nv := input.v\n")


def test_lone_surrogates_are_typed_errors() -> None:
    with pytest.raises(EvidenceError):
        RegoPolicy('package p\nx := "\ud800"\n')
    with pytest.raises(EvidenceError):
        RegoPolicy("package p\nx := data\n", data_json='{"a": "\ud800"}')
    p = RegoPolicy("package p\nx := input\n")
    for call in (
        lambda: p.evaluate("data.p.x", input_json='{"a": "\ud800"}'),
        lambda: p.evaluate("data.p.x", {"a": "\ud800"}),
        lambda: p.evaluate("data.p.\ud800", {}),
        lambda: p.evaluate("data.p.x", data_json='{"a": "\ud800"}'),
    ):
        with pytest.raises(PolicyDenied):
            call()
    assert p.evaluate("data.p.x", {"a": "ok"}) == {"a": "ok"}


def test_deep_input_is_a_typed_error() -> None:
    p = RegoPolicy("package p\nx := input\n")
    with pytest.raises(PolicyDenied, match="recursion limit"):
        p.evaluate("data.p.x", input_json="[" * 100_000 + "]" * 100_000)
    deep: list[object] = []
    cur = deep
    for _ in range(5000):
        nxt: list[object] = []
        cur.append(nxt)
        cur = nxt
    with pytest.raises(PolicyDenied):
        p.evaluate("data.p.x", {"a": deep})


def test_bracket_nesting_is_bounded_before_regorus_parses() -> None:
    # regorus needs seconds for 16 levels of `[` and overflows its stack on thousands
    for text in ("package p\nx := " + "[" * 13 + "]" * 13 + "\n", "package p\nx := " + "[" * 9999):
        with pytest.raises(EvidenceError, match="nest") as exc:
            RegoPolicy(text)
        assert exc.value.reason == "rego.parse"
    ok = (
        "package p\n# ((((((((((((((((((\nx := "
        + "[" * 6
        + '"[[[[[[[[[[[[[[[[[[["'
        + "]" * 6
        + "\n"
    )
    assert RegoPolicy(ok).evaluate("data.p.x") == [[[[[["[" * 19]]]]]]
    assert nesting_depth("a := {`{{{{`: [f(x)]}") == 3
    with pytest.raises(EvidenceError):
        RegoPolicy("package p\nx := [[[1]]]\n", limits=PolicyLimits(max_nesting=2))


def test_only_trustpod_rego_imports_regorus() -> None:
    # one port: swapping the engine (ADR 0202) touches src/trustpod/rego only
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "trustpod"
    users = []
    for f in src.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "regorus" or n.startswith("regorus.") for n in names):
                users.append(f.relative_to(src).as_posix())
    assert users and all(u.startswith("rego/") for u in users), users


def test_engine_keys() -> None:
    from trustpod.rego import CompiledPolicy

    def fn(x: str) -> str:
        return x

    text = 'package p\nr := f("a")\n'
    a = RegoPolicy(text, extensions={"f": (1, fn)})
    b = RegoPolicy(text, extensions={"f": (1, fn)})
    assert a.key != b.key  # callables without a key: never shared
    c = RegoPolicy(text, extensions={"f": (1, fn)}, extensions_key="k")
    d = RegoPolicy(text, extensions={"f": (1, fn)}, extensions_key="k")
    assert c.key == d.key and c.evaluate("data.p.r") == "a"
    ref = {"reference": {"x": [1]}}
    assert (
        CompiledPolicy(text, ("r",), ref).policy.key == CompiledPolicy(text, ("r",), ref).policy.key
    )
    other = {"reference": {"x": [2]}}
    assert (
        CompiledPolicy(text, ("r",), ref).policy.key
        != CompiledPolicy(text, ("r",), other).policy.key
    )
    assert (
        RegoPolicy(text + "#", extensions_key="k").key != RegoPolicy(text, extensions_key="k").key
    )
