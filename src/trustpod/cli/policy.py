"""``trustpod policy check|generate``: the kata agent policy, offline.

* ``check --policy FILE --cases FILE`` evaluates genpolicy-style cases in order against one
  engine (state carried) after normalising each request to the agent's serde shape; prints one
  JSON object per case and exits 0 (2 on unusable input).
* ``generate POD.yaml [--settings FILE] [--initdata --kbs-url URL]`` writes a policy that allows
  exactly this pod (genpolicy's job), every image pinned to its digest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from trustpod.errors import ConfigError, EvidenceError

__all__ = ["register"]


def _read_text(path: str, what: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc}", reason="cli.read") from exc


def _lookup(kind: str) -> Any:
    from trustpod.agent.pb import protos

    try:
        return protos().pool.FindMessageTypeByName(f"grpc.{kind}")
    except KeyError:
        return None


def _check(args: argparse.Namespace) -> int:
    from trustpod.agent.policy_check import parse_cases, run_cases
    from trustpod.agent.policy_engine import AgentPolicy

    policy = _read_text(args.policy, "policy")
    try:
        doc = json.loads(_read_text(args.cases, "cases file"))
        cases = parse_cases(doc, _lookup)
        AgentPolicy(policy)  # load errors are unusable input, before any case runs
    except json.JSONDecodeError as exc:
        print(f"trustpod: error: the cases file is not JSON: {exc}", file=sys.stderr)
        return 2
    except (EvidenceError, ConfigError) as exc:
        print(f"trustpod: error: {exc.diagnostics()}", file=sys.stderr)
        return 2
    for row in run_cases(policy, cases):
        print(json.dumps(row, sort_keys=False))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("policy", help="kata agent policy: check cases, generate")
    sub = parser.add_subparsers(dest="policy_cmd", metavar="SUBCOMMAND")
    sub.required = True

    c = sub.add_parser("check", help="evaluate genpolicy-style test cases against a policy")
    c.add_argument("--policy", required=True, metavar="FILE", help="agent policy (Rego)")
    c.add_argument("--cases", required=True, metavar="FILE", help="JSON list of cases ('-')")
    c.set_defaults(func=_check)
