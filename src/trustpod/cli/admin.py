"""``trustpod admin``: the KBS admin API, mirroring upstream ``kbs-client config`` (§2.3).

``trustpod admin --url U --token-file F [--cert-file PEM] <command>`` with ``set-resource``,
``delete-resource``, ``set-resource-policy``, ``set-attestation-policy``,
``set-reference-value``, ``get-reference-value`` and ``explain``. Exactly HTTP 200 is success
(upstream kbs-client, §12); anything else prints the KBS's error detail and exits non-zero.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

from trustpod.errors import (
    ConfigError,
)

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("admin", help="KBS admin API (resources, policies, reference values)")
    p.add_argument("--url", required=True, help="KBS base URL, e.g. https://127.0.0.1:8080")
    p.add_argument(
        "--token-file", type=Path, help="admin JWT file (trustpod kbs init: D/admin-token)"
    )
    p.add_argument("--cert-file", metavar="PEM", help="CA certificate of the KBS (HTTPS)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    sub = p.add_subparsers(dest="admin_cmd", metavar="SUBCOMMAND")
    sub.required = True
    s = sub.add_parser("set-resource", help="store a resource")
    s.add_argument("--path", required=True, help="repo/type/tag")
    s.add_argument("--resource-file", required=True, type=Path)
    s.set_defaults(func=_set_resource)
    s = sub.add_parser("delete-resource", help="delete a resource")
    s.add_argument("--path", required=True, help="repo/type/tag")
    s.set_defaults(func=_delete_resource)
    s = sub.add_parser("set-resource-policy", help="set the resource policy (Rego)")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--policy-file", type=Path)
    g.add_argument("--allow-all", action="store_true")
    g.add_argument("--deny-all", action="store_true")
    g.add_argument("--affirming", action="store_true")
    s.set_defaults(func=_set_resource_policy)
    s = sub.add_parser("set-attestation-policy", help="set an attestation policy (Rego)")
    s.add_argument("--id", default="default_cpu", help="policy id (default: default_cpu)")
    s.add_argument("--type", default="rego")
    s.add_argument("--policy-file", required=True, type=Path)
    s.set_defaults(func=_set_attestation_policy)
    s = sub.add_parser("set-reference-value", help="register a sample reference value")
    s.add_argument("name")
    s.add_argument("value")
    kind = s.add_mutually_exclusive_group()
    kind.add_argument("--as-integer", action="store_true")
    kind.add_argument("--as-bool", action="store_true")
    s.add_argument("--as-single-value", action="store_true", help="do not wrap in a list")
    s.set_defaults(func=_set_reference_value)
    s = sub.add_parser("get-reference-value", help="print a reference value")
    s.add_argument("name")
    s.set_defaults(func=_get_reference_value)
    s = sub.add_parser("explain", help="why was a request denied (by its request id)")
    s.add_argument("request_id")
    s.set_defaults(func=_explain)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {what} {path}: {exc.strerror}", fix="check the path"
        ) from exc


def _call(args: argparse.Namespace, method: str, path: str, **kw: Any) -> Any:
    from trustpod.admin_http import admin_request

    token = None
    if args.token_file is not None:
        token = _read(args.token_file, "admin token file").decode().strip()
    return admin_request(
        args.url, method, path, token=token, cert_file=args.cert_file, timeout_s=args.timeout, **kw
    )


def _set_resource(args: argparse.Namespace) -> int:
    data = _read(args.resource_file, "resource file")
    _call(args, "POST", f"/kbs/v0/resource/{args.path}", content=data)
    print(f"resource {args.path} set ({len(data)} bytes)")
    return 0


def _delete_resource(args: argparse.Namespace) -> int:
    _call(args, "DELETE", f"/kbs/v0/resource/{args.path}")
    print(f"resource {args.path} deleted")
    return 0


def _set_resource_policy(args: argparse.Namespace) -> int:
    from trustpod.kbs.resource_policy import PRESETS

    if args.policy_file is not None:
        text = _read(args.policy_file, "policy file")
    else:
        name = "allow-all" if args.allow_all else "deny-all" if args.deny_all else "affirming"
        text = PRESETS[name].encode()
    _call(args, "POST", "/kbs/v0/resource-policy", json={"policy": _b64url(text)})
    print("resource policy set")
    return 0


def _set_attestation_policy(args: argparse.Namespace) -> int:
    text = _read(args.policy_file, "policy file")
    body = {"type": args.type, "policy_id": args.id, "policy": _b64url(text)}
    _call(args, "POST", "/kbs/v0/attestation-policy", json=body)
    print(f"attestation policy {args.id} set")
    return 0


def _set_reference_value(args: argparse.Namespace) -> int:
    value: Any = args.value
    if args.as_integer:
        try:
            value = int(args.value)
        except ValueError as exc:
            raise ConfigError(f"{args.value!r} is not an integer") from exc
    elif args.as_bool:
        if args.value.lower() not in ("true", "false"):
            raise ConfigError(f"{args.value!r} is not true/false")
        value = args.value.lower() == "true"
    if not args.as_single_value:
        value = [value]
    payload = base64.b64encode(json.dumps({args.name: value}).encode()).decode()
    body = {"version": "0.1.0", "type": "sample", "payload": payload}
    _call(args, "POST", "/kbs/v0/reference-value", json=body)
    print(f"reference value {args.name} set to {json.dumps(value)}")
    return 0


def _get_reference_value(args: argparse.Namespace) -> int:
    r = _call(args, "GET", f"/kbs/v0/reference-value/{args.name}")
    print(r.text)
    return 0


def _explain(args: argparse.Namespace) -> int:
    r = _call(args, "GET", f"/kbs/v0/trustpod/explain/{args.request_id}")
    print(r.text)
    # the JSON stays on stdout (scripts parse it); a human summary goes to stderr
    for line in _explain_summary(r.json()):
        print(line, file=sys.stderr)
    return 0


def _explain_summary(doc: Any) -> list[str]:
    """Non-affirming submods with their trust vector, then each failed reference value."""
    from trustpod.attestation.rv_explain import failed_reference_values

    if not isinstance(doc, dict):
        return []
    explain = doc.get("explain") if isinstance(doc.get("explain"), dict) else {}
    assert isinstance(explain, dict)
    lines = [f"denied: {doc.get('method')} {doc.get('path')} -> {doc.get('status')}"]
    if explain.get("policy"):
        lines.append(f"resource policy: {explain['policy']}")
    appraisal = explain.get("attestation")
    submods = appraisal.get("submods", {}) if isinstance(appraisal, dict) else {}
    for name, sub in submods.items() if isinstance(submods, dict) else ():
        if not isinstance(sub, dict) or sub.get("ear.status") == "affirming":
            continue
        vector = sub.get("ear.trustworthiness-vector") or {}
        bad = {k: v for k, v in vector.items() if isinstance(v, int) and not 0 <= v <= 3}
        lines.append(f"{name}: {sub.get('ear.status')} ({sub.get('policy_id')}) {bad}")
        failures = sub.get("reference_value_failures")
        if isinstance(failures, list) and failures:
            lines += [f"  {line}" for line in failed_reference_values(failures)]
        elif failures is not None:
            lines.append("  no reference-value check of the policy failed (see its rules)")
    return lines
