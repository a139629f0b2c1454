"""The agent policy gate decides as kata's agent (pods-images-gpu.md §1.3-1.5, guest §6.1)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trustpod.agent.pb import protos
from trustpod.agent.policy import KataPolicyGate, build_gate, policy_input
from trustpod.agent.policy_defaults import (
    ALLOW_ALL,
    ALLOW_ALL_ENTRYPOINTS,
    ALLOW_ALL_EXCEPT_EXEC_PROCESS,
    ALLOW_SET_POLICY,
)
from trustpod.agent.policy_engine import AgentPolicy, PolicySettings
from trustpod.errors import ConfigError, PolicyDenied

pb = protos().grpc

STATEFUL = """package agent_policy
import future.keywords.if
import future.keywords.in

default CreateContainerRequest := {"allowed": false}
default ExecProcessRequest := false
default RemoveContainerRequest := {"allowed": true}
default SetPolicyRequest := false

CreateContainerRequest := {"ops": ops, "allowed": true} if {
    not data.pstate[input.container_id]
    input.OCI.Process.Args == ["sleep", "3600"]
    ops := [{"op": "add", "path": concat("/", ["/pstate", input.container_id]), "value": 1}]
}

ExecProcessRequest if {
    print("exec", input.container_id)
    data.pstate[input.container_id]
    input.process.Args == ["ls"]
}

RemoveContainerRequest := {"ops": ops, "allowed": true} if {
    data.pstate[input.container_id]
    ops := [{"op": "remove", "path": concat("/", ["/pstate", input.container_id])}]
}

SetPolicyRequest if { startswith(input.policy, "package agent_policy\\n# signed-off") }
"""


def _create(cid: str, args: list[str]) -> Any:
    req = pb.CreateContainerRequest(container_id=cid)
    req.OCI.Process.Args.extend(args)
    return req


def test_allow_all_decides_as_kata() -> None:
    gate = KataPolicyGate(ALLOW_ALL)
    assert len(ALLOW_ALL_ENTRYPOINTS) == 39
    gate.check("CreateContainerRequest", _create("c", ["sh"]))
    gate.check("ExecProcessRequest", pb.ExecProcessRequest(container_id="c"))
    gate.check("SetPolicyRequest", pb.SetPolicyRequest(policy="x"))
    # not listed in allow-all: undefined -> an error (INTERNAL), not a denial
    with pytest.raises(ConfigError) as exc:
        gate.check("GetIPTablesRequest", pb.GuestDetailsRequest())
    assert exc.value.reason == "agent_policy.eval"
    assert not isinstance(exc.value, PolicyDenied)


def test_allow_all_except_exec_process() -> None:
    gate = KataPolicyGate(ALLOW_ALL_EXCEPT_EXEC_PROCESS)
    gate.check("CreateContainerRequest", _create("c", ["sh"]))
    with pytest.raises(PolicyDenied):
        gate.check("ExecProcessRequest", pb.ExecProcessRequest(container_id="c"))
    with pytest.raises(ConfigError):  # dropped from this policy: undefined
        gate.evaluate("GetDiagnosticDataRequest", {})
    assert gate.allows("ReadStreamRequest", pb.ReadStreamRequest(container_id="c"))


def test_allow_set_policy_only() -> None:
    gate = KataPolicyGate(ALLOW_SET_POLICY)
    gate.check("SetPolicyRequest", pb.SetPolicyRequest(policy="x"))
    with pytest.raises(ConfigError):
        gate.check("CreateContainerRequest", _create("c", []))


def test_sources_in_kata_order_and_set_policy_checked() -> None:
    gate = build_gate()
    assert gate.source == "default"
    gate.check("ExecProcessRequest", pb.ExecProcessRequest())  # image default: allow-all
    # initdata policy: installed without a check (its own SetPolicy rule is irrelevant)
    gate.apply_initdata_policy(STATEFUL)
    assert gate.source == "initdata"
    # SetPolicy checked by the current policy: this one refuses an unsigned-off replacement
    with pytest.raises(PolicyDenied):
        gate.check("SetPolicyRequest", pb.SetPolicyRequest(policy=ALLOW_ALL))
    replacement = "package agent_policy\n# signed-off\ndefault ExecProcessRequest := true\n"
    gate.check("SetPolicyRequest", pb.SetPolicyRequest(policy=replacement))
    gate.set_policy(replacement)
    assert gate.source == "set_policy"
    gate.check("ExecProcessRequest", pb.ExecProcessRequest())


def test_state_ops_carry_across_requests() -> None:
    gate = build_gate(initdata_policy=STATEFUL)
    with pytest.raises(PolicyDenied) as denied:
        gate.check("ExecProcessRequest", pb.ExecProcessRequest(container_id="c1"))
    assert "exec c1" in denied.value.message  # print() output is the denial message
    gate.check("CreateContainerRequest", _create("c1", ["sleep", "3600"]))
    assert gate.state == {"pstate": {"c1": 1}}
    with pytest.raises(PolicyDenied):  # same id twice: the state says no
        gate.check("CreateContainerRequest", _create("c1", ["sleep", "3600"]))
    with pytest.raises(PolicyDenied):
        gate.check("CreateContainerRequest", _create("c2", ["sh"]))
    req = pb.ExecProcessRequest(container_id="c1")
    req.process.Args.append("ls")
    gate.check("ExecProcessRequest", req)
    gate.check("RemoveContainerRequest", pb.RemoveContainerRequest(container_id="c1"))
    assert gate.state == {"pstate": {}}
    with pytest.raises(PolicyDenied):
        gate.check("ExecProcessRequest", req)
    # SetPolicy resets the state (a new engine, kata set_policy)
    gate.check("CreateContainerRequest", _create("c3", ["sleep", "3600"]))
    gate.set_policy(STATEFUL)
    assert gate.state == {"pstate": {}}


def test_denied_object_ops_not_applied() -> None:
    policy = (
        "package agent_policy\n"
        'CreateContainerRequest := {"allowed": false, "ops": '
        '[{"op": "add", "path": "/pstate/x", "value": 1}]}\n'
    )
    gate = KataPolicyGate(policy)
    with pytest.raises(PolicyDenied):
        gate.check("CreateContainerRequest", _create("c", []))
    assert gate.state == {"pstate": {}}


@pytest.mark.parametrize(
    "body",
    [
        'CreateContainerRequest := "yes"',
        'CreateContainerRequest := {"ops": []}',
        'CreateContainerRequest := {"allowed": true, "ops": {"op": "add"}}',
        'CreateContainerRequest := {"allowed": true, "ops": [{"op": "remove", "path": "/nope"}]}',
        'CreateContainerRequest := {"allowed": true, "ops": [{"op": "frobnicate", "path": "/a"}]}',
    ],
)
def test_malformed_results_are_errors(body: str) -> None:
    gate = KataPolicyGate(f"package agent_policy\n{body}\n")
    with pytest.raises(ConfigError) as exc:
        gate.check("CreateContainerRequest", _create("c", []))
    assert exc.value.reason == "agent_policy.eval"
    assert gate.state == {"pstate": {}}


def test_allow_requests_failing_policy() -> None:
    policy = (
        "package agent_policy\ndefault AllowRequestsFailingPolicy := true\n"
        "default ExecProcessRequest := false\n"
    )
    gate = KataPolicyGate(policy)
    assert gate.allow_failures
    gate.check("ExecProcessRequest", pb.ExecProcessRequest())  # denial ignored
    gate.check("GetIPTablesRequest", pb.GuestDetailsRequest())  # undefined ignored
    # the flag is re-read from the new policy alone (divergence: kata keeps the old flag)
    gate.set_policy(ALLOW_ALL_EXCEPT_EXEC_PROCESS)
    assert not gate.allow_failures
    with pytest.raises(PolicyDenied):
        gate.check("ExecProcessRequest", pb.ExecProcessRequest())


def test_copy_file_is_rewritten_before_evaluation() -> None:
    policy = """package agent_policy
import future.keywords.if
default CopyFileRequest := false
CopyFileRequest if {
    input.file_type == "Symlink"
    input.symlink_target == "..data/token"
    not input.data
}
"""
    gate = KataPolicyGate(policy)
    req = pb.CopyFileRequest(path="/run/x", file_mode=0o120777, data=b"..data/token")
    assert policy_input("CopyFileRequest", req)["file_type"] == "Symlink"
    gate.check("CopyFileRequest", req)
    with pytest.raises(PolicyDenied):
        gate.check("CopyFileRequest", pb.CopyFileRequest(path="/run/x", file_mode=0o100644))


def test_read_stream_redaction_contract() -> None:
    gate = KataPolicyGate(
        "package agent_policy\ndefault ReadStreamRequest := false\n"
        "default GuestDetailsRequest := true\n"
    )
    assert not gate.allows("ReadStreamRequest", pb.ReadStreamRequest(container_id="c"))
    assert gate.allows("GuestDetailsRequest", pb.GuestDetailsRequest())
    # an error (undefined rule) also redacts, never raises
    assert not gate.allows("WriteStreamRequest", pb.WriteStreamRequest())


def test_failed_set_policy_keeps_current_policy() -> None:
    gate = KataPolicyGate(ALLOW_ALL_EXCEPT_EXEC_PROCESS)
    for bad in ("package agent_policy\nallow { true }\n", "package other\ndefault X := true\n"):
        with pytest.raises(ConfigError):
            gate.set_policy(bad)
    gate.check("CreateContainerRequest", _create("c", []))
    with pytest.raises(PolicyDenied):
        gate.check("ExecProcessRequest", pb.ExecProcessRequest())


def test_length_limits_are_named_settings() -> None:
    long_line = 'default CreateContainerRequest := true\nX := "' + "a" * 2000 + '"\n'
    text = "package agent_policy\n" + long_line
    AgentPolicy(text)  # kata's raised limits: 64 KiB per line
    with pytest.raises(ConfigError) as exc:
        AgentPolicy(text, settings=PolicySettings(max_line_bytes=1024))
    assert exc.value.reason == "agent_policy.parse"
    with pytest.raises(ConfigError) as exc:
        AgentPolicy(text, settings=PolicySettings(max_policy_bytes=100))
    assert exc.value.reason == "agent_policy.too_large"
    many = "package agent_policy\n" + "\n".join(f"r{i} := {i}" for i in range(300)) + "\n"
    with pytest.raises(ConfigError):
        AgentPolicy(many, settings=PolicySettings(max_policy_lines=100))
    with pytest.raises(ConfigError):
        PolicySettings(max_line_bytes=0)


def test_input_log_skips_kata_unlogged_requests() -> None:
    lines: list[str] = []
    gate = KataPolicyGate(ALLOW_ALL, input_log=lines.append)
    gate.check("CreateContainerRequest", _create("c", ["sh"]))
    gate.check("ReadStreamRequest", pb.ReadStreamRequest())
    gate.check("SetPolicyRequest", pb.SetPolicyRequest(policy="secret-ish"))
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["kind"] == "CreateContainerRequest"
    assert entry["request"]["container_id"] == "c" and entry["request"]["string_user"] is None


def test_gate_is_safe_across_threads() -> None:
    """RPCs run on a thread pool: one gate, state carried, regorus engines are per thread."""
    from concurrent.futures import ThreadPoolExecutor

    gate = build_gate(initdata_policy=STATEFUL)

    def create(i: int) -> bool:
        try:
            gate.check("CreateContainerRequest", _create(f"c{i}", ["sleep", "3600"]))
        except PolicyDenied:
            return False
        return True

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(create, [i % 8 for i in range(32)]))
    assert sum(results) == 8  # each id exactly once, whichever thread got there first
    assert gate.state == {"pstate": {f"c{i}": 1 for i in range(8)}}
