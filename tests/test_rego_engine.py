"""trustpod.rego (regorus): false vs undefined, errors, caching, query_reference_value, threads."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.errors import EvidenceError, PolicyDenied
from trustpod.rego import CompiledPolicy, PolicyEngine, package_of, validate

POLICY = """package policy
import rego.v1

default allow := false
allow if input.user == "alice"

maybe := 1 if input.user == "bob"

decoded := base64.decode(input.blob)

rv := query_reference_value("launch_digest")
missing_rv := query_reference_value("nope")
member if input.digest in query_reference_value("launch_digest")
"""
RULES = ("allow", "maybe", "decoded", "rv", "missing_rv", "member")


@pytest.fixture(scope="module")
def compiled() -> CompiledPolicy:
    return CompiledPolicy(POLICY, RULES, {"reference": {"launch_digest": ["abc", "def"]}})


def test_false_is_false_not_undefined(compiled: CompiledPolicy) -> None:
    assert compiled.evaluate({"user": "mallory"}, "allow") is False
    assert compiled.evaluate({"user": "alice"}, "allow") is True


def test_undefined_rule_is_none(compiled: CompiledPolicy) -> None:
    assert compiled.evaluate({"user": "alice"}, "maybe") is None
    assert compiled.evaluate({"user": "bob"}, "maybe") == 1
    assert "maybe" not in compiled.evaluate_all({"user": "alice", "blob": "YQ=="})


def test_builtin_error_is_policy_error(compiled: CompiledPolicy) -> None:
    # a failing builtin is an error (fail closed), not a silent undefined
    with pytest.raises(PolicyDenied) as exc:
        compiled.evaluate({"blob": "!!!not base64"}, "decoded")
    assert exc.value.reason == "rego.error"
    assert compiled.evaluate({"blob": "aGk="}, "decoded") == "hi"


def test_rule_not_compiled_is_error(compiled: CompiledPolicy) -> None:
    with pytest.raises(PolicyDenied):
        compiled.evaluate({}, "not_an_entrypoint")


def test_query_reference_value_library(compiled: CompiledPolicy) -> None:
    assert compiled.evaluate({}, "rv") == ["abc", "def"]
    assert compiled.evaluate({}, "missing_rv") is None  # null
    assert compiled.evaluate({"digest": "def"}, "member") is True
    assert compiled.evaluate({"digest": "zzz"}, "member") is None


def test_query_reference_value_without_data() -> None:
    c = CompiledPolicy(POLICY, ("rv", "member"))
    assert c.evaluate({}, "rv") is None
    assert c.evaluate({"digest": "abc"}, "member") is None


def test_policy_defining_its_own_helper_is_kept() -> None:
    text = 'package policy\nquery_reference_value(id) := "mine"\nx := query_reference_value("a")\n'
    assert CompiledPolicy(text, ("x",), {"reference": {"a": 1}}).evaluate({}, "x") == "mine"


def test_other_package_and_v0_syntax() -> None:
    text = "package agent\ndefault allow = false\nallow { input.a == 1 }\n"
    with pytest.raises(EvidenceError):  # Rego v1 by default, as upstream's regorus
        CompiledPolicy(text, ("allow",))
    c = CompiledPolicy(text, ("allow",), rego_v0=True)
    assert c.package == "agent"
    assert c.evaluate({"a": 1}, "allow") is True
    assert c.evaluate({"a": 2}, "allow") is False
    v0 = CompiledPolicy(text, ("data.agent.allow",), rego_v0=True)
    assert v0.evaluate({"a": 1}, "data.agent.allow")


def test_conflicting_values_are_errors() -> None:
    text = "package policy\nimport rego.v1\nt := 1 if input.a\nt := 2 if input.a\n"
    c = CompiledPolicy(text, ("t",))
    with pytest.raises(PolicyDenied):
        c.evaluate({"a": True}, "t")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("package policy\nimport rego.v1\n\nallow if {\n", 5),  # regorus: at end of input
        ("package policy\nimport rego.v1\n\nallow if {\n  input.x ==\n}\n", 6),
        ("package policy\nallow := := 1\n", None),
    ],
)
def test_malformed_policy(text: str, line: int | None) -> None:
    with pytest.raises(EvidenceError) as exc:
        validate(text)
    assert exc.value.reason == "rego.parse"
    assert "policy does not compile" in exc.value.message
    if line is not None:
        assert f"line {line}" in exc.value.message


def test_missing_package() -> None:
    with pytest.raises(EvidenceError) as exc:
        package_of("allow := true\n")
    assert exc.value.reason == "rego.parse"


def test_too_large() -> None:
    with pytest.raises(EvidenceError) as exc:
        validate("package policy\n" + "#" * (600 * 1024))
    assert exc.value.reason == "rego.too_large"


def test_engine_caches_by_text_and_data() -> None:
    engine = PolicyEngine(max_entries=2)
    a = engine.compile(POLICY, RULES, {"reference": {"launch_digest": ["x"]}})
    assert engine.compile(POLICY, RULES, {"reference": {"launch_digest": ["x"]}}) is a
    b = engine.compile(POLICY, RULES, {"reference": {"launch_digest": ["y"]}})
    assert b is not a
    assert b.evaluate({"digest": "y"}, "member") is True
    assert engine.evaluate(POLICY, {"user": "alice"}, None, "allow") is True
    # LRU bounded: `a` was evicted
    assert engine.compile(POLICY, RULES, {"reference": {"launch_digest": ["x"]}}) is not a


def test_thread_safety(compiled: CompiledPolicy) -> None:
    errors: list[str] = []

    def worker(i: int) -> None:
        for n in range(150):
            user = "alice" if (i + n) % 2 else "eve"
            if compiled.evaluate({"user": user}, "allow") is not (user == "alice"):
                errors.append(user)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_query_is_fast(compiled: CompiledPolicy) -> None:
    n = 500
    start = time.perf_counter()
    for _ in range(n):
        compiled.evaluate({"user": "alice"}, "allow")
    per_query_ms = (time.perf_counter() - start) / n * 1000
    assert per_query_ms < 2.0  # ~0.06 ms measured on the 2-core box


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet='package policy{}[]():=ifx"1 \n.', max_size=60))
def test_validate_random_text_raises_only_typed_errors(text: str) -> None:
    try:
        validate(text)
    except EvidenceError as exc:
        assert exc.reason in ("rego.parse", "rego.too_large")
