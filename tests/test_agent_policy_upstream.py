"""Upstream kata policy files decide as kata's own tests say (opt-in: a local kata checkout).

Nothing of kata is shipped in this repository. Point ``TRUSTPOD_KATA_SRC`` at a
kata-containers checkout (or ``TRUSTPOD_VECTORS`` holding ``kata-containers/``) to run:

* ``src/kata-opa/allow-all.rego`` / ``allow-all-except-exec-process.rego`` decide exactly as our
  written-from-semantics equivalents, for every request name;
* genpolicy's ``rules.rego`` (which regopy cannot parse) loads under regorus with kata's raised
  limits, with ``policy_data`` built as genpolicy builds its settings-derived part (``common``,
  ``sandbox``, ``request_defaults``, ``cluster_config``), and decides genpolicy's own
  ``testcases.json`` for the requests that depend on those parts only (CopyFile, CreateSandbox,
  UpdateInterface, UpdateRoutes) exactly as expected — through ``policy check``'s normaliser.
  The container cases need genpolicy's per-image output, which needs a registry.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from trustpod.agent.pb import protos
from trustpod.agent.policy import KataPolicyGate
from trustpod.agent.policy_check import parse_cases, run_cases
from trustpod.agent.policy_defaults import (
    ALLOW_ALL,
    ALLOW_ALL_ENTRYPOINTS,
    ALLOW_ALL_EXCEPT_EXEC_PROCESS,
)
from trustpod.errors import ConfigError


def _kata_root() -> Path | None:
    for candidate in (
        os.environ.get("TRUSTPOD_KATA_SRC"),
        os.path.join(os.environ.get("TRUSTPOD_VECTORS", "../shared/vectors"), "kata-containers"),
    ):
        if candidate and (Path(candidate) / "src/tools/genpolicy/rules.rego").is_file():
            return Path(candidate)
    return None


ROOT = _kata_root()
pytestmark = pytest.mark.skipif(
    ROOT is None,
    reason="no kata-containers checkout: set TRUSTPOD_KATA_SRC to run the upstream policy files",
)
GENPOLICY_DIRS = ("copyfile", "createsandbox", "updateinterface", "updateroutes")


def _decide(gate: KataPolicyGate, name: str) -> Any:
    try:
        return gate.evaluate(name, {}).allowed
    except ConfigError:
        return "error"


@pytest.mark.parametrize(
    ("upstream", "ours"),
    [
        ("allow-all.rego", ALLOW_ALL),
        ("allow-all-except-exec-process.rego", ALLOW_ALL_EXCEPT_EXEC_PROCESS),
    ],
)
def test_kata_opa_defaults_equal_ours(upstream: str, ours: str) -> None:
    assert ROOT is not None
    theirs = KataPolicyGate((ROOT / "src/kata-opa" / upstream).read_text())
    mine = KataPolicyGate(ours)
    names = [
        *ALLOW_ALL_ENTRYPOINTS,
        "GetIPTablesRequest",
        "VolumeStatsRequest",
        "AddSwapPathRequest",
    ]
    assert {n: _decide(theirs, n) for n in names} == {n: _decide(mine, n) for n in names}


def _lookup(kind: str) -> Any:
    try:
        return protos().pool.FindMessageTypeByName(f"grpc.{kind}")
    except KeyError:
        return None


@pytest.mark.parametrize("case_dir", GENPOLICY_DIRS)
def test_genpolicy_rules_decide_upstream_testcases(case_dir: str) -> None:
    assert ROOT is not None
    genpolicy = ROOT / "src/tools/genpolicy"
    settings = json.loads((genpolicy / "genpolicy-settings.json").read_text())
    data = {
        "containers": [],
        **{k: settings[k] for k in ("common", "sandbox", "request_defaults", "cluster_config")},
    }
    policy = (
        (genpolicy / "rules.rego").read_text()
        + "\npolicy_data := "
        + json.dumps(data, indent=2)
        + "\n"
    )
    doc = json.loads(
        (genpolicy / "tests/policy/testdata" / case_dir / "testcases.json").read_text()
    )
    results = run_cases(policy, parse_cases(doc, _lookup))
    assert results and all(r.matches is not None for r in results)
    wrong = [(r.case.description, r.allowed, r.error) for r in results if not r.matches]
    assert wrong == []
