"""``trustpod collateral``: fill the offline collateral store (layout in docs/collateral.md).

```
trustpod collateral fetch amd --product P (--hwid H --tcb bl=N,tee=N,snp=N,ucode=N[,fmc=N]
                                           | --report FILE) --dir D [--kds-url U]
trustpod collateral fetch intel --fmspc F [--ca platform|processor] --dir D [--pcs-url U]
trustpod collateral import --dir D FILE...          AMD ARK/ASK/ASVK/VCEK (PEM or DER)
trustpod collateral import intel --dir D --tcb-info F --qe-identity F [--pck-crl F ...]
```

AMD roots are stored only when their fingerprint is pinned; ASK/ASVK only when signed by it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from trustpod.errors import ConfigError, EvidenceError

__all__ = ["parse_tcb", "register"]

DEFAULT_PCS_URL = "https://api.trustedservices.intel.com/sgx/certification/v4/"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("collateral", help="fetch/import vendor collateral (offline store)")
    sub = p.add_subparsers(dest="collateral_cmd", metavar="ACTION")
    sub.required = True

    fetch = sub.add_parser("fetch", help="download collateral into the store")
    vendors = fetch.add_subparsers(dest="vendor", metavar="VENDOR")
    vendors.required = True
    amd = vendors.add_parser("amd", help="VCEK and ARK/ASK/ASVK from AMD KDS")
    amd.add_argument("--product", choices=("Milan", "Genoa", "Turin"), help="product line")
    amd.add_argument("--hwid", help="chip_id hex (128 digits; 16 on Turin)")
    amd.add_argument("--tcb", help="bl=N,tee=N,snp=N,ucode=N[,fmc=N]")
    amd.add_argument("--report", type=Path, help="take product/hwid/TCB from a raw SNP report")
    amd.add_argument("--dir", required=True, type=Path, help="collateral directory")
    amd.add_argument("--kds-url", default=None, help="KDS base URL (default AMD's)")
    amd.set_defaults(func=_fetch_amd)
    intel = vendors.add_parser("intel", help="TCB info, QE identity, CRLs from Intel PCS/PCCS")
    intel.add_argument("--fmspc", required=True)
    intel.add_argument("--ca", default="platform", choices=("platform", "processor"))
    intel.add_argument("--dir", required=True, type=Path)
    intel.add_argument("--pcs-url", default=DEFAULT_PCS_URL)
    intel.set_defaults(func=_fetch_intel)

    imp = sub.add_parser("import", help="file local collateral into the store")
    imp.add_argument("files", nargs="*", type=Path, help="AMD certificates, or `intel`")
    imp.add_argument("--dir", required=True, type=Path, help="collateral directory")
    for flag in ("--tcb-info", "--qe-identity", "--tcb-info-issuer-chain"):
        imp.add_argument(flag, type=Path, help="(intel) " + flag[2:])
    for flag in ("--qe-identity-issuer-chain", "--pck-crl", "--root-ca-crl"):
        imp.add_argument(flag, type=Path, help="(intel) " + flag[2:])
    imp.add_argument("--ca", default="platform", choices=("platform", "processor"))
    imp.set_defaults(func=_import)


def parse_tcb(text: str) -> Any:
    """``bl=3,tee=0,snp=8,ucode=115[,fmc=5]`` -> ``AmdTcb``."""
    from trustpod.collateral.ports import AmdTcb

    values: dict[str, int] = {}
    try:
        for part in text.split(","):
            key, _, value = part.partition("=")
            values[key.strip()] = int(value, 0)
        return AmdTcb(
            values["bl"], values["tee"], values["snp"], values["ucode"], values.get("fmc")
        )
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"--tcb {text!r}: expected bl=N,tee=N,snp=N,ucode=N[,fmc=N]", reason="cli.tcb"
        ) from exc


def _fetch_amd(args: argparse.Namespace) -> int:
    from trustpod.collateral.amd import (
        DEFAULT_KDS_URL,
        AmdKdsFetcher,
        CachingAmdSource,
        KdsSettings,
    )
    from trustpod.collateral.cache import FileCache
    from trustpod.collateral.ports import AmdTcb, kds_hwid

    product, hwid, tcb = args.product, args.hwid, parse_tcb(args.tcb) if args.tcb else None
    if args.report is not None:
        from trustpod.evidence.snp import SnpReport
        from trustpod.verifiers.snp import product_from_cpuid

        report = SnpReport.from_bytes(args.report.read_bytes())
        product = product or product_from_cpuid(report.cpuid_fam_id or 0, report.cpuid_mod_id or 0)
        t = report.reported_tcb
        tcb = tcb or AmdTcb(t.bootloader, t.tee, t.snp, t.microcode, t.fmc)
        hwid = hwid or (kds_hwid(product, report.chip_id) if product else None)
    if not product or not hwid or tcb is None:
        raise ConfigError(
            "need --product, --hwid and --tcb (or --report with a v3+ report)",
            reason="cli.fetch_args",
        )
    fetcher = AmdKdsFetcher(KdsSettings(base_url=args.kds_url or DEFAULT_KDS_URL))
    try:
        source = CachingAmdSource(FileCache(args.dir), fetcher)
        source.get_ca_certs(product)
        source.get_vcek(product, hwid.lower(), tcb)
    finally:
        fetcher.close()
    print(f"stored {product} ARK/ASK/ASVK and the VCEK for {hwid[:16]}... in {args.dir}")
    return 0


def _fetch_intel(args: argparse.Namespace) -> int:
    from trustpod.collateral import intel

    paths = intel.fetch_to_store(args.pcs_url, args.fmspc, args.ca, args.dir)
    for path in paths:
        print(path)
    return 0


def _import(args: argparse.Namespace) -> int:
    files = list(args.files)
    if files and str(files[0]) in ("intel", "amd"):
        vendor = str(files.pop(0))
    else:
        vendor = "amd"
    if vendor == "intel":
        from trustpod.collateral import intel

        if args.tcb_info is None or args.qe_identity is None:
            raise ConfigError("import intel needs --tcb-info and --qe-identity", reason="cli.args")
        paths = intel.import_files(
            args.dir,
            tcb_info=args.tcb_info,
            qe_identity=args.qe_identity,
            ca=args.ca,
            tcb_info_issuer_chain=args.tcb_info_issuer_chain,
            qe_identity_issuer_chain=args.qe_identity_issuer_chain,
            pck_crl=args.pck_crl,
            root_ca_crl=args.root_ca_crl,
        )
    else:
        if not files:
            raise ConfigError("name the certificate files to import", reason="cli.args")
        paths = _import_amd(args.dir, files)
    for path in paths:
        print(path)
    return 0


def _import_amd(directory: Path, files: list[Path]) -> list[Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from trustpod.collateral.cache import FileCache
    from trustpod.verifiers.snp_chain import load_cert

    store = FileCache(directory)
    ders: list[bytes] = []
    for path in files:
        raw = path.read_bytes()
        if b"-----BEGIN CERTIFICATE-----" in raw:
            try:
                ders.extend(
                    c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(raw)
                )
            except ValueError as exc:
                raise EvidenceError(f"{path}: bad PEM", reason="collateral.pem") from exc
        else:
            ders.append(raw)
    order = {"ARK-": 0, "SEV-VLEK-": 1, "SEV-": 1}  # ARKs first: the others are checked by it
    certs = [(load_cert(der, "certificate"), der) for der in ders]

    def rank(item: tuple[Any, bytes]) -> int:
        from trustpod.verifiers.snp_chain import common_name

        cn = common_name(item[0])
        return next((v for k, v in order.items() if cn.startswith(k)), 2)

    return [store.import_cert(cert, der) for cert, der in sorted(certs, key=rank)]
