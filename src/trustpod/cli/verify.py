"""``trustpod verify``: verify TEE evidence offline (or with KDS/PCS) and print the claims.

```
trustpod verify --tee TEE --evidence FILE (--report-data HEX | --report-data-text STR)
    [--init-data FILE] [--collateral DIR] [--now ISO8601] [--insecure-emulated-root PEM]
    [--kds-url URL] [--pcs-url URL] [--allow-vmpl N] [--verifier-option TEE.KEY=VALUE ...]
```

Exit 0 with the claims JSON on stdout; otherwise ``trustpod: error: <message> [<reason>]`` on
stderr (the reason names the failed check) and a non-zero exit code (see ``cli.main``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any

from trustpod.errors import ConfigError, EvidenceError

__all__ = ["register", "run_verify"]

_log = logging.getLogger(__name__)
SNP_RAW_REPORT_SIZE = 0x4A0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "verify",
        help="verify TEE evidence and print the claims",
        description="Verify TEE evidence (snp, az-snp-vtpm, az-tdx-vtpm, tdx, tpm, nvidia, sample) "
        "exactly as the attestation service does, and print the claims as JSON.",
    )
    p.add_argument("--tee", required=True, help="TEE name (snp, az-snp-vtpm, tdx, tpm, ...)")
    p.add_argument("--evidence", required=True, type=Path, help="evidence JSON (raw .bin for snp)")
    rd = p.add_mutually_exclusive_group(required=True)
    rd.add_argument("--report-data", help="expected report_data, hex")
    rd.add_argument("--report-data-text", help="expected report_data, as UTF-8 text")
    p.add_argument("--init-data", type=Path, help="initdata TOML whose digest must be bound")
    p.add_argument("--collateral", type=Path, help="collateral directory (offline store)")
    p.add_argument("--now", help="verification time, ISO 8601 (default: now)")
    p.add_argument(
        "--insecure-emulated-root",
        action="append",
        type=Path,
        default=[],
        metavar="PEM",
        help="INSECURE: also trust this emulated vendor root (PEM, may hold ARK and ASK)",
    )
    p.add_argument("--kds-url", help="fetch missing AMD collateral from this KDS")
    p.add_argument("--pcs-url", help="fetch missing Intel collateral from this PCS/PCCS")
    p.add_argument(
        "--allow-vmpl", action="append", type=int, default=[], help="accepted SNP VMPL (default 0)"
    )
    p.add_argument(
        "--verifier-option",
        action="append",
        default=[],
        metavar="TEE.KEY=VALUE",
        help="verifier-specific option, e.g. tdx.tcb_update_type=early or "
        "tdx.insecure_skip_crl=true (insecure_* options warn on every use)",
    )
    p.set_defaults(func=run_verify)


def _verifier_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["tdx.insecure_skip_crl=true"]`` -> ``{"tdx": {"insecure_skip_crl": True}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        tee, dot, key = name.partition(".")
        if not sep or not dot or not tee or not key:
            raise ConfigError(
                f"--verifier-option {item!r} is not TEE.KEY=VALUE",
                reason="cli.verifier_option",
                fix="write it like tdx.insecure_skip_crl=true",
            )
        value: Any = {"true": True, "false": False}.get(raw.lower(), raw)
        out.setdefault(tee, {})[key] = value
    return out


def _now(text: str | None) -> _dt.datetime:
    if text is None:
        return _dt.datetime.now(_dt.UTC)
    try:
        value = _dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--now {text!r} is not ISO 8601", reason="cli.now") from exc
    return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)


def _report_data(args: argparse.Namespace) -> bytes:
    if args.report_data_text is not None:
        return str(args.report_data_text).encode()
    try:
        return bytes.fromhex(args.report_data)
    except ValueError as exc:
        raise ConfigError("--report-data must be hex", reason="cli.report_data") from exc


def _evidence(tee: str, path: Path, max_bytes: int) -> Any:
    raw = path.read_bytes()
    if len(raw) > max_bytes:
        raise EvidenceError(f"{path} exceeds {max_bytes} bytes", reason="cli.evidence_size")
    if tee == "snp" and len(raw) == SNP_RAW_REPORT_SIZE and not raw.lstrip().startswith(b"{"):
        return raw
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvidenceError(f"{path} is not JSON evidence", reason="cli.evidence_json") from exc


def _emulated_roots(paths: list[Path]) -> tuple[bytes, ...]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    ders: list[bytes] = []
    for path in paths:
        try:
            certs = x509.load_pem_x509_certificates(path.read_bytes())
        except ValueError as exc:
            raise ConfigError(
                f"{path} holds no PEM certificate", reason="cli.emulated_root"
            ) from exc
        ders.extend(c.public_bytes(Encoding.DER) for c in certs)
    return tuple(ders)


def _check_tee(tee: str) -> None:
    """An unknown ``--tee`` names the TEEs that exist (not "no verifiers configured")."""
    from trustpod.collateral.wiring import FACTORIES

    if tee not in FACTORIES:
        known = ", ".join(sorted(FACTORIES))
        raise ConfigError(
            f"unknown TEE {tee!r}: trustpod verifies {known}",
            reason="verifier.unknown_tee",
            fix=f"pass --tee with one of: {known}",
        )


def run_verify(args: argparse.Namespace) -> int:
    from trustpod.collateral.wiring import build_verifiers
    from trustpod.initdata import InitData
    from trustpod.verifiers.base import VerifierSettings, VerifyInput

    _check_tee(args.tee)
    init_digest = None
    if args.init_data is not None:
        init_digest = InitData.parse(args.init_data.read_bytes()).digest
    settings = VerifierSettings(
        collateral_dir=args.collateral,
        amd_kds_url=args.kds_url,
        intel_pcs_url=args.pcs_url,
        allowed_vmpls=frozenset(args.allow_vmpl or [0]),
        insecure_emulated_roots=_emulated_roots(args.insecure_emulated_root),
        extra=_verifier_options(args.verifier_option),
    )
    registry = build_verifiers(settings, tees=(args.tee,))
    evidence = _evidence(args.tee, args.evidence, settings.max_evidence_bytes)
    expected = VerifyInput(_report_data(args), init_digest, _now(args.now))
    results = registry.verify(args.tee, evidence, expected)
    out: Any = (
        results[0].claims
        if len(results) == 1
        else [{"tee_class": r.tee_class, "claims": r.claims} for r in results]
    )
    print(json.dumps(out, indent=2, sort_keys=False))
    return 0
