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


def _policy_text(text: str) -> str:
    """A Rego policy as given, or the ``policy.rego`` entry of an initdata TOML."""
    from trustpod.initdata import InitData

    try:
        doc = InitData.parse(text)
    except EvidenceError:
        return text  # not an initdata document: Rego
    policy = doc.data.get("policy.rego")
    if policy is None:
        raise ConfigError("the initdata has no policy.rego entry", reason="cli.usage")
    return policy


def _check(args: argparse.Namespace) -> int:
    from trustpod.agent.policy_check import parse_cases, run_cases

    policy = _policy_text(_read_text(args.policy, "policy"))
    try:
        doc = json.loads(_read_text(args.cases, "cases file"))
        cases = parse_cases(doc, _lookup)
        # the policy loads before any case runs: a load error is unusable input
        results = run_cases(policy, cases)
    except json.JSONDecodeError as exc:
        print(f"trustpod: error: the cases file is not JSON: {exc}", file=sys.stderr)
        return 2
    except (EvidenceError, ConfigError) as exc:
        print(f"trustpod: error: {exc.diagnostics()}", file=sys.stderr)
        return 2
    for result in results:
        print(json.dumps(result.row()))
    wrong = [(i, r) for i, r in enumerate(results) if r.matches is False]
    for i, r in wrong:
        why = r.error or r.prints or "no print() output"
        print(
            f"case {i} ({r.case.kind} {r.case.description!r}): allowed={r.allowed}, "
            f"expected {r.case.expected}: {why}",
            file=sys.stderr,
        )
    print(f"{len(results)} cases, {len(wrong)} differ from their `allowed`", file=sys.stderr)
    return 0


def _registry_resolver(insecure_http: list[str]) -> Any:
    """Tag -> digest (and image config) from the registry, every digest checked (trustpod.oci)."""
    from trustpod.agent.policy_gen import ImageInfo
    from trustpod.oci.reference import ImageReference
    from trustpod.oci.registry import RegistryClient
    from trustpod.oci.settings import OciSettings

    settings = OciSettings(insecure_http_registries=frozenset(insecure_http))

    def resolve(image: ImageReference) -> ImageInfo:
        with RegistryClient(settings) as client:
            top = client.get_manifest(image)
            resolved = client.resolve(image.with_digest(top.digest))
            raw = client.get_blob(
                resolved.image, resolved.manifest.config, settings.max_config_bytes
            )
        try:
            config = json.loads(raw)
        except ValueError as exc:
            raise EvidenceError(f"image config of {image} is not JSON") from exc
        return ImageInfo(top.digest, config if isinstance(config, dict) else None)

    return resolve


def _generate(args: argparse.Namespace) -> int:
    from trustpod.agent.policy_gen import generate_policy, load_settings, parse_pod

    settings = load_settings(_read_text(args.settings, "settings") if args.settings else None)
    pod = parse_pod(_read_text(args.pod, "pod YAML"))
    resolver = _registry_resolver(args.insecure_http_registry) if args.resolve else None
    text = generate_policy(pod, settings, resolver)
    if args.initdata:
        from trustpod.cli.initdata import build_initdata

        if not args.kbs_url:
            raise ConfigError("--initdata needs --kbs-url", reason="cli.usage")
        cert = _read_text(args.kbs_cert, "KBS certificate") if args.kbs_cert else None
        text = build_initdata(args.kbs_url, kbs_cert=cert, policy=text)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("policy", help="kata agent policy: check cases, generate")
    sub = parser.add_subparsers(dest="policy_cmd", metavar="SUBCOMMAND")
    sub.required = True

    c = sub.add_parser("check", help="evaluate genpolicy-style test cases against a policy")
    c.add_argument(
        "--policy", required=True, metavar="FILE", help="agent policy (Rego) or initdata TOML"
    )
    c.add_argument("--cases", required=True, metavar="FILE", help="JSON list of cases ('-')")
    c.set_defaults(func=_check)

    g = sub.add_parser("generate", help="policy allowing exactly this pod (images pinned)")
    g.add_argument("pod", metavar="POD.yaml", help="Kubernetes Pod (or workload) YAML")
    g.add_argument("--settings", metavar="FILE", help="generator settings (JSON)")
    g.add_argument(
        "--resolve", action="store_true", help="resolve tags (and image configs) at the registry"
    )
    g.add_argument(
        "--insecure-http-registry",
        action="append",
        default=[],
        metavar="HOST",
        help="INSECURE: speak plain http to this registry (repeatable; local tests)",
    )
    g.add_argument("--initdata", action="store_true", help="embed it in an initdata TOML")
    g.add_argument("--kbs-url", help="KBS URL for the initdata's aa.toml/cdh.toml")
    g.add_argument("--kbs-cert", metavar="PEM", help="CA certificate of the KBS")
    g.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    g.set_defaults(func=_generate)
