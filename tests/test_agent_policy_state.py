"""The policy state read through ``trustpod.pstate()`` decides exactly as kata's clear-and-add.

``policy_state.externalize_state`` rewrites ``data.pstate`` only where that is provably the same
document; the equivalence test drives random JSON-patch sequences through both modes and compares
every decision, error and resulting document (ADR 0960).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.agent.policy_engine import AgentPolicy, PolicySettings
from trustpod.agent.policy_state import STATE_RULE, externalize_state
from trustpod.errors import ConfigError

PKG = "agent_policy"


def test_rewrites_both_spellings_and_leaves_strings_and_comments() -> None:
    text = (
        'package agent_policy\nx := data.pstate.a # data.pstate\ny := "data.pstate"\n'
        'z := data["pstate"]["b"]\nw := data.pstates\nv := `data.pstate`\n'
    )
    out = externalize_state(text, PKG)
    assert out is not None
    target = f"data.{PKG}.{STATE_RULE}"
    assert f"x := {target}.a # data.pstate\n" in out
    assert 'y := "data.pstate"\n' in out
    assert f'z := {target}["b"]\n' in out
    assert "w := data.pstates\n" in out
    assert "v := `data.pstate`\n" in out
    assert out.rstrip().endswith("}")


@pytest.mark.parametrize(
    "body",
    [
        "x := data[k]",  # a computed key could be "pstate"
        "x := data",  # the whole document
        "x := data .pstate",
        "import data.pstate\nx := pstate",
        "x := 1 with data.pstate as {}",
        f"{STATE_RULE} := 1",  # the reserved name is taken
        'x := "unterminated',
    ],
)
def test_refuses_what_could_change_the_meaning(body: str) -> None:
    assert externalize_state(f"package {PKG}\n{body}\n", PKG) is None


POLICY = """package agent_policy
import future.keywords.if

default Put := {"allowed": false}
Put := {"allowed": input.allow, "ops": input.ops}
Dot := data.pstate[input.key]
Index := data["pstate"][input.key]
Whole := data.pstate
Other := data.other
Present if data.pstate
"""

_keys = st.sampled_from(["a", "b", "c"])
_values = st.one_of(
    st.integers(-3, 3), st.text(max_size=3), st.lists(st.integers(0, 2), max_size=2)
)
_ops = st.one_of(
    st.builds(lambda k, v: {"op": "add", "path": f"/pstate/{k}", "value": v}, _keys, _values),
    st.builds(lambda k: {"op": "remove", "path": f"/pstate/{k}"}, _keys),
    st.builds(lambda v: {"op": "add", "path": "/other", "value": v}, _values),
    st.just({"op": "remove", "path": "/pstate"}),
    st.just({"op": "add", "path": "/pstate", "value": {}}),
    st.just({"op": "replace", "path": "/pstate", "value": 7}),
)
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("Put"), st.booleans(), st.lists(_ops, max_size=3)),
        st.tuples(st.sampled_from(["Dot", "Index", "Whole", "Other", "Present"]), _keys),
    ),
    max_size=12,
)


def _outcome(policy: AgentPolicy, step: tuple[Any, ...]) -> tuple[Any, ...]:
    if step[0] == "Put":
        request = {"allow": step[1], "ops": step[2]}
    else:
        request = {"key": step[1]}
    try:
        decision = policy.allow_request(step[0], json.dumps(request))
    except ConfigError as exc:
        return ("error", exc.message.split(":")[0], policy.data)
    return (decision.allowed, policy.data)


@settings(max_examples=60, deadline=None)
@given(_steps)
def test_external_state_decides_as_clear_and_add(steps: list[tuple[Any, ...]]) -> None:
    fast = AgentPolicy(POLICY)
    exact = AgentPolicy(POLICY, settings=PolicySettings(externalize_state=False))
    assert fast._state_box is not None and exact._state_box is None
    for step in steps:
        assert _outcome(fast, step) == _outcome(exact, step), step


def test_a_state_patch_leaves_the_engine_data_alone() -> None:
    policy = AgentPolicy(POLICY)
    before = policy._data_json
    ops = [{"op": "add", "path": "/pstate/a", "value": 1}]
    assert policy.allow_request("Put", json.dumps({"allow": True, "ops": ops})).allowed
    assert policy._data_json is before  # regorus is not made to re-prepare
    assert policy.data == {"pstate": {"a": 1}}
    ops = [{"op": "add", "path": "/other", "value": 2}]
    assert policy.allow_request("Put", json.dumps({"allow": True, "ops": ops})).allowed
    assert policy._data_json != before  # any other key: the engine's data is replaced
    rule = f"data.{PKG}.Other"
    assert policy._rego.evaluate(rule, input_json="{}", data_json=policy._data_json) == 2
