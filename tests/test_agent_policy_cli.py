"""``trustpod policy check`` end to end through the CLI (genpolicy's testcases.json format)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trustpod.agent.policy_defaults import ALLOW_ALL_EXCEPT_EXEC_PROCESS
from trustpod.cli.main import main

STATEFUL = """package agent_policy
import future.keywords.if

default CreateContainerRequest := {"allowed": false}
default ExecProcessRequest := false
default SetPolicyRequest := true
default CopyFileRequest := false

CreateContainerRequest := {"ops": ops, "allowed": true} if {
    input.string_user == null
    input.OCI.Hooks == null
    ops := [{"op": "add", "path": concat("/", ["/pstate", input.container_id]), "value": 0}]
}

ExecProcessRequest if {
    data.pstate[input.container_id] == 0
    input.process.Args == ["date"]
}

CopyFileRequest if {
    startswith(input.path, "/run/kata-containers/shared/containers/")
    input.file_type == "Regular"
    input.file_size == 0
}
"""


def _run(tmp_path: Path, policy: str, cases: Any, capsys: pytest.CaptureFixture[str]) -> Any:
    (tmp_path / "p.rego").write_text(policy)
    (tmp_path / "c.json").write_text(cases if isinstance(cases, str) else json.dumps(cases))
    rc = main(
        [
            "policy",
            "check",
            "--policy",
            str(tmp_path / "p.rego"),
            "--cases",
            str(tmp_path / "c.json"),
        ]
    )
    out = capsys.readouterr()
    return rc, [json.loads(line) for line in out.out.splitlines()], out.err


def test_check_carries_state_and_normalises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        {
            "description": "exec before create",
            "kind": "ExecProcessRequest",
            "request": {"container_id": "c1", "process": {"Args": ["date"]}},
            "allowed": False,
        },
        {
            "description": "create (partial request: nulls filled)",
            "kind": "CreateContainerRequest",
            "request": {"container_id": "c1", "OCI": {"Version": "1.1.0"}},
            "allowed": True,
        },
        {
            "description": "exec listed",
            "kind": "ExecProcessRequest",
            "request": {"container_id": "c1", "process": {"Args": ["date"]}},
            "allowed": True,
        },
        {
            "description": "exec other",
            "kind": "ExecProcessRequest",
            "request": {"container_id": "c1", "process": {"Args": ["sh"]}},
            "allowed": False,
        },
        {
            "description": "copy",
            "kind": "CopyFileRequest",
            "request": {"path": "/run/kata-containers/shared/containers/x", "file_type": "Regular"},
        },
        {"kind": "GuestDetailsRequest", "request": {}},
        {
            "description": "replace",
            "kind": "SetPolicyRequest",
            "request": {"policy": ALLOW_ALL_EXCEPT_EXEC_PROCESS},
        },
        {
            "description": "after SetPolicy",
            "kind": "ExecProcessRequest",
            "request": {"container_id": "c1", "process": {"Args": ["date"]}},
        },
    ]
    rc, rows, err = _run(tmp_path, STATEFUL, cases, capsys)
    assert rc == 0, err
    assert [r["allowed"] for r in rows] == [False, True, True, False, True, False, True, False]
    assert rows[0] == {
        "description": "exec before create",
        "kind": "ExecProcessRequest",
        "allowed": False,
    }
    assert "error" in rows[5] and "GuestDetailsRequest" in rows[5]["error"]
    assert rows[5]["description"] == ""
    assert all("error" not in r for i, r in enumerate(rows) if i != 5)
    expected = [c.get("allowed") for c in cases]
    assert all(e is None or e == r["allowed"] for e, r in zip(expected, rows, strict=True))
    assert "8 cases, 0 differ" in err


def test_check_reports_mismatches_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [{"description": "x", "kind": "ExecProcessRequest", "request": {}, "allowed": True}]
    rc, rows, err = _run(tmp_path, STATEFUL, cases, capsys)
    assert rc == 0 and rows == [
        {"description": "x", "kind": "ExecProcessRequest", "allowed": False}
    ]
    assert "case 0 (ExecProcessRequest 'x'): allowed=False, expected True" in err
    assert "1 cases, 1 differ" in err


@pytest.mark.parametrize(
    "cases",
    [
        "not json",
        {"kind": "CreateContainerRequest"},
        [{"request": {}}],
        [{"kind": "NoSuchRequest", "request": {}}],
        [{"kind": "CreateContainerRequest", "request": {"container_id": 7}}],
        [{"kind": "CreateContainerRequest", "request": {}, "allowed": "yes"}],
        [{"kind": "CopyFileRequest", "request": {"file_type": "Pipe"}}],
    ],
)
def test_check_unusable_input_exits_2(
    tmp_path: Path, cases: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, rows, err = _run(tmp_path, STATEFUL, cases, capsys)
    assert rc == 2 and rows == [] and "error" in err


def test_check_bad_policy_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _rows, err = _run(tmp_path, "package agent_policy\nx { true }\n", [], capsys)
    assert rc == 2 and "agent_policy.parse" in err


def test_check_as_a_user_runs_it(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text(ALLOW_ALL_EXCEPT_EXEC_PROCESS)
    (tmp_path / "c.json").write_text(
        json.dumps(
            [
                {"kind": "CreateContainerRequest", "request": {}, "allowed": True},
                {
                    "kind": "ExecProcessRequest",
                    "request": {"process": {"Args": ["sh"]}},
                    "allowed": False,
                },
            ]
        )
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trustpod.cli",
            "policy",
            "check",
            "--policy",
            "p.rego",
            "--cases",
            "c.json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [r["allowed"] for r in rows] == [True, False]
