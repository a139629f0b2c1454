"""Resource policy on regorus: presets mean what they say, non-boolean allow, errors, sessions."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod._internal.clock import FixedClock
from trustpod.errors import AuthenticationError, EvidenceError
from trustpod.kbs.resource_policy import DEFAULT_POLICY, PRESETS, ResourcePolicy
from trustpod.kbs.sessions import AttestedSession, SessionStore
from trustpod.storage.memory import MemoryStore

STATUS = st.sampled_from(["affirming", "warning", "contraindicated", "none", 3])
SUBMOD = st.fixed_dictionaries({"ear.status": STATUS}) | st.just({})
CLAIMS = st.fixed_dictionaries(
    {"submods": st.dictionaries(st.sampled_from(["cpu0", "gpu0", "gpu1"]), SUBMOD, max_size=3)}
) | st.just({})


@pytest.fixture(scope="module")
def policy() -> ResourcePolicy:
    return ResourcePolicy(MemoryStore())


def _expected(name: str, claims: dict[str, Any], plugin: str) -> bool:
    """What each preset is documented to mean (test oracle only; the KBS runs the Rego)."""
    if name == "allow-all":
        return plugin == "resource"
    if name == "deny-all":
        return False
    subs = list(claims.get("submods", {}).values())
    return bool(subs) and all(s.get("ear.status") == "affirming" for s in subs)


@settings(max_examples=60, deadline=None)
@given(
    claims=CLAIMS, name=st.sampled_from(sorted(PRESETS)), plugin=st.sampled_from(["resource", "x"])
)
def test_presets_evaluate_as_documented(
    policy: ResourcePolicy, claims: dict[str, Any], name: str, plugin: str
) -> None:
    d = policy._evaluate(PRESETS[name], "p-" + name, claims, plugin, ["a", "b", "c"], {})
    assert d.error is None and d.policy_name == name
    assert d.allow == _expected(name, claims, plugin), (name, claims, plugin)
    as_json = policy._evaluate(
        PRESETS[name], "p-" + name, {}, plugin, ["a", "b", "c"], {}, json.dumps(claims)
    )
    assert as_json == d


def test_default_is_affirming_and_custom_data(policy: ResourcePolicy) -> None:
    assert DEFAULT_POLICY == PRESETS["affirming"]
    store = MemoryStore()
    p = ResourcePolicy(store)
    p.install_default()
    assert p.current() == DEFAULT_POLICY
    p.set(
        "package policy\nimport rego.v1\ndefault allow := false\n"
        'allow if { data["resource-path"][0] == "ok"; data.query.v == "1"; input.x == 1 }\n'
    )
    p.install_default()  # overwrite=False keeps the stored policy
    ok = p.evaluate({"x": 1}, "resource", ["ok", "b", "c"], {"v": "1"})
    assert ok.allow and ok.policy_name == "custom"
    assert not p.evaluate({"x": 1}, "resource", ["no", "b", "c"], {"v": "1"}).allow
    assert not p.evaluate({"x": 1}, "resource", ["ok", "b", "c"], {}).allow
    # cached decisions are keyed by token digest and path
    assert p.evaluate({"x": 1}, "resource", ["ok", "b", "c"], {"v": "1"}, claims_key=b"t").allow
    assert p.evaluate({"x": 2}, "resource", ["ok", "b", "c"], {"v": "1"}, claims_key=b"t").allow
    p.set("package policy\nallow = 3\n")
    d = p.evaluate({}, "resource", ["a", "b", "c"], {})
    assert not d.allow and d.error == "data.policy.allow is not a boolean"
    with pytest.raises(EvidenceError) as exc:
        p.set("package policy\nallow {{\n")
    assert exc.value.reason == "kbs.policy_parse"
    assert p.current().startswith("package policy\nallow = 3")  # the bad one was not stored


def test_sessions_shape_and_expiry() -> None:
    import json

    clock = FixedClock(dt.datetime(2026, 8, 21, 1, 55, 31, tzinfo=dt.UTC))
    store = MemoryStore()
    s = SessionStore(store, clock, 5)
    authed = s.create({"version": "0.4.0", "tee": "sample", "extra-params": ""}, {"nonce": "n"})
    doc = json.loads(store.get("kbs_protocol_session", authed.id) or b"")
    assert doc["Authed"]["timeout"] == "2026-08-21T02:00:31Z" and doc["Authed"]["id"] == authed.id
    attested = s.attest(authed, "tok")
    assert isinstance(s.get(authed.id), AttestedSession) and attested.expires == authed.expires
    assert set(json.loads(store.get("kbs_protocol_session", authed.id) or b"")) == {"Attested"}
    other = s.create({"tee": "sample"}, {"nonce": "m"})
    clock.advance(301)
    assert s.purge_expired() == 2
    with pytest.raises(AuthenticationError, match="not found"):
        s.get(other.id)
    for bad in (None, "", "../x", "a" * 65):
        with pytest.raises(AuthenticationError):
            s.get(bad)
    store.put("kbs_protocol_session", "abc", b"{not json")
    with pytest.raises(AuthenticationError, match="corrupt"):
        s.get("abc")


def test_upstream_style_policy_with_plugin_and_claims() -> None:
    # Upstream's sample policies: `=` assignments, `if` without `import rego.v1` (Rego v1).
    p = ResourcePolicy(MemoryStore())
    p.set(
        "package policy\n"
        "default allow = false\n"
        "plugin = data.plugin\n"
        "allow if {\n"
        '  plugin == "resource"\n'
        '  not input["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["sample"]\n'
        "}\n"
    )
    sample = {"submods": {"cpu0": {"ear.veraison.annotated-evidence": {"sample": {}}}}}
    snp = {"submods": {"cpu0": {"ear.veraison.annotated-evidence": {"snp": {}}}}}
    assert not p.evaluate(sample, "resource", ["a", "b", "c"], {}).allow
    assert p.evaluate(snp, "resource", ["a", "b", "c"], {}).allow
    assert not p.evaluate(snp, "other", ["a", "b", "c"], {}).allow


def test_v0_only_syntax_is_refused_with_the_engine_message() -> None:
    # Upstream's regorus runs Rego v1: a v0 rule body (`allow { ... }`) does not load there.
    p = ResourcePolicy(MemoryStore())
    with pytest.raises(EvidenceError) as exc:
        p.set("package policy\ndefault allow = false\nallow {\n  input.a == 1\n}\n")
    msg = exc.value.message
    assert exc.value.reason == "kbs.policy_parse"
    assert "policy.rego line 3, column 7" in msg
    assert "`if` keyword is required before rule body" in msg
    assert "3 | allow {" in msg  # the source line and caret come back whole


def test_evaluation_errors_fail_closed() -> None:
    p = ResourcePolicy(MemoryStore())
    p.set("package policy\nimport rego.v1\nallow if 1 / count(input.x) > 0\n")
    d = p.evaluate({"x": []}, "resource", ["a", "b", "c"], {})
    assert not d.allow and d.error is not None and "divide by zero" in d.error
    assert p.evaluate({"x": [1]}, "resource", ["a", "b", "c"], {}).allow
    p.set("package policy\nimport rego.v1\nallow := true if input.a\nallow := false if input.b\n")
    d = p.evaluate({"a": True, "b": True}, "resource", ["a", "b", "c"], {})
    assert not d.allow and d.error is not None and "conflict" in d.error
