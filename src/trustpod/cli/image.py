"""``trustpod image build|reference-values|check``: pod VM root images and their measurement."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from trustpod.errors import ConfigError

__all__ = ["register"]

_TEES = ("az-snp-vtpm", "az-tdx-vtpm", "tpm")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("image", help="pod VM images: verity root, manifest, PCR 11")
    sub = parser.add_subparsers(dest="image_cmd", metavar="SUBCOMMAND")
    sub.required = True

    b = sub.add_parser("build", help="read-only root image + verity hash device + boot manifest")
    b.add_argument(
        "--rootfs",
        type=Path,
        default=None,
        help="directory with the root tree (with --bootable default: Debian + trustpod)",
    )
    b.add_argument("--out", type=Path, required=True, help="output directory")
    b.add_argument("--fs", choices=("squashfs", "ext4"), default="squashfs")
    b.add_argument("--hash", dest="algorithm", default="sha256")
    b.add_argument("--salt", default=None, help="hex (default: derived from the image digest)")
    b.add_argument("--uuid", default=None, help="superblock UUID (default: derived)")
    b.add_argument("--cmdline-extra", default=None, help="rest of the kernel command line")
    b.add_argument("--osrel", type=Path, default=None, help="os-release file (measured .osrel)")
    b.add_argument("--data-device", default=None, help="systemd.verity_root_data= value")
    b.add_argument("--hash-device", default=None, help="systemd.verity_root_hash= value")
    b.add_argument(
        "--bootable",
        action="store_true",
        help="the whole pod VM: kernel, verity initramfs, GPT disk.raw, disk.vhd, vm.json",
    )
    b.add_argument("--dry-run", action="store_true", help="print what would be built")
    b.add_argument("--cache-dir", type=Path, default=None, help="default: $XDG_CACHE_HOME/...")
    b.add_argument("--no-vhd", action="store_true", help="skip disk.vhd (Azure)")
    b.add_argument("--checkout", type=Path, default=Path("."), help="trustpod source tree")
    b.add_argument(
        "--local-images", type=Path, default=None, help="unpacked images baked into the VM"
    )
    b.set_defaults(func=_build)

    r = sub.add_parser("reference-values", help="expected PCR 11 as an RVPS sample message")
    r.add_argument("manifest", type=Path)
    r.add_argument("--tee", action="append", choices=_TEES, help="repeatable (default: all)")
    r.add_argument("--publish", metavar="URL", default=None, help="KBS base URL to POST to")
    r.add_argument("--token-file", type=Path, default=None, help="KBS admin bearer token")
    r.add_argument("--cert-file", type=Path, default=None, help="CA/cert PEM for https")
    r.set_defaults(func=_reference_values)

    c = sub.add_parser("check", help="boot-time check: verify the root image against roothash=")
    c.add_argument("manifest", type=Path, help="boot manifest (its cmdline gives the root hash)")
    c.add_argument("--data", type=Path, default=None, help="data device (default: next to it)")
    c.add_argument("--hash-device", type=Path, default=None, help="hash device")
    c.set_defaults(func=_check)

    p = sub.add_parser("pull", help="pull an OCI image, check its signature policy, unpack it")
    p.add_argument("ref", help="image reference, e.g. 127.0.0.1:5000/app/web:1")
    p.add_argument("--policy", type=Path, required=True, help="containers-policy.json(5) file")
    p.add_argument(
        "--dest", type=Path, required=True, help="writes DEST/rootfs and DEST/image.json"
    )
    p.add_argument("--signature-store", default=None, help="lookaside URL (file:// or http(s))")
    p.add_argument("--registries-d", type=Path, default=None, help="dir of lookaside *.yaml")
    p.add_argument("--authfile", type=Path, default=None, help="auth.json with registry creds")
    p.add_argument("--cache-dir", type=Path, default=None, help="blob cache (default DEST/.blobs)")
    p.add_argument("--platform", default=None, help="os/arch[/variant] (default: this host)")
    p.add_argument(
        "--insecure-http-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="speak plain http to this registry (INSECURE; repeatable)",
    )
    p.add_argument(
        "--decryption-key-dir", type=Path, default=None, help="KEKs of encrypted layers by kid"
    )
    p.add_argument("--jwe-private-key", action="append", default=[], type=Path, metavar="PEM")
    p.set_defaults(func=_pull)

    e = sub.add_parser("encrypt", help="encrypt image layers (ocicrypt; keys held by the KBS)")
    e.add_argument("src", help="oci:DIR[:TAG] or docker://REF")
    e.add_argument("dst", help="oci:DIR[:TAG] or docker://REF")
    e.add_argument("--key-uri", default=None, help="kbs:///default/image-key/NAME (the KEK)")
    k = e.add_mutually_exclusive_group()
    k.add_argument("--key-file", type=Path, default=None, help="existing 32-byte KEK")
    k.add_argument("--key-out", type=Path, default=None, help="write a new random KEK here")
    e.add_argument("--jwe-recipient", action="append", default=[], type=Path, metavar="PEM")
    e.add_argument("--layers", default=None, help="layer indices, e.g. 0,-1 (default: all)")
    e.add_argument("--publish", metavar="URL", default=None, help="KBS URL: store the KEK there")
    e.add_argument("--token-file", type=Path, default=None, help="KBS admin token")
    e.add_argument("--cert-file", default=None, help="CA PEM of the KBS / registry (https)")
    e.add_argument(
        "--insecure-http-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="speak plain http to this registry (INSECURE; repeatable)",
    )
    e.set_defaults(func=_encrypt)


def _load(path: Path) -> Any:
    from trustpod.image.manifest import MAX_MANIFEST_BYTES, BootManifest

    try:
        with path.open("rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read manifest {path}: {exc}", reason="image.manifest") from exc
    return BootManifest.loads(raw)


def _build(args: argparse.Namespace) -> int:
    if args.bootable or args.dry_run:
        from trustpod.cli.image_vm import build_bootable

        return build_bootable(args)
    if args.rootfs is None:
        raise ConfigError("--rootfs is required without --bootable", reason="image.rootfs")
    from trustpod.image.build import DEFAULT_CMDLINE_EXTRA, MANIFEST_NAME, BuildOptions, build_image
    from trustpod.image.fsmakers import maker_for
    from trustpod.verity.core import check_algorithm, parse_salt, parse_uuid

    osrel = None
    if args.osrel is not None:
        try:
            osrel = args.osrel.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read {args.osrel}: {exc}", reason="image.osrel") from exc
    opts = BuildOptions(
        algorithm=check_algorithm(args.algorithm, ConfigError),
        salt=parse_salt(args.salt, ConfigError) if args.salt is not None else None,
        uuid=parse_uuid(args.uuid, ConfigError) if args.uuid is not None else None,
        cmdline_extra=DEFAULT_CMDLINE_EXTRA if args.cmdline_extra is None else args.cmdline_extra,
        osrel=osrel,
        data_device=args.data_device,
        hash_device=args.hash_device,
    )
    manifest = build_image(args.rootfs, args.out, maker_for(args.fs), opts)
    print(f"image:     {args.out / manifest.root_image.path} ({manifest.root_image.size} bytes)")
    print(f"hash:      {args.out / manifest.hash_device.path} ({manifest.hash_device.size} bytes)")
    print(f"root hash: {manifest.root_hash}")
    print(f"pcr11:     {manifest.pcr11_sha256}")
    print(f"manifest:  {args.out / MANIFEST_NAME}")
    return 0


def _reference_values(args: argparse.Namespace) -> int:
    from trustpod.image.reference_values import publish, reference_values, rvps_sample_message

    manifest = _load(args.manifest)
    message = rvps_sample_message(reference_values(manifest, args.tee or _TEES))
    print(json.dumps(message))
    if args.publish:
        if args.token_file is None:
            raise ConfigError("--publish needs --token-file", reason="image.publish")
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read token file: {exc}", reason="image.publish") from exc
        publish(args.publish, token, message, cert_file=args.cert_file)
    return 0


def _check(args: argparse.Namespace) -> int:
    from trustpod.image.boot import check_root

    manifest = _load(args.manifest)
    base = args.manifest.parent
    data = args.data or base / manifest.root_image.path
    hash_dev = args.hash_device or base / manifest.hash_device.path
    check_root(manifest, data, hash_dev)
    print(f"root image verified against roothash={manifest.root_hash}")
    return 0


def _encrypt(args: argparse.Namespace) -> int:
    from trustpod.oci.encrypt_cli import encrypt_from_args

    print(json.dumps(encrypt_from_args(args), indent=2))
    return 0


def _pull(args: argparse.Namespace) -> int:
    from trustpod.oci.cli_support import pull_from_args

    print(json.dumps(pull_from_args(args), indent=2))
    return 0
