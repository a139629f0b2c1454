"""``trustpod verity format|verify|dump``: veritysetup-compatible hash trees on files."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from trustpod.errors import ConfigError

__all__ = ["register"]

_DEFAULT_SALT_BYTES = 32  # veritysetup's random salt size


def _add_params(p: argparse.ArgumentParser, *, with_defaults: bool) -> None:
    p.add_argument("--hash", dest="algorithm", default="sha256", help="sha256 (default) or sha512")
    p.add_argument("--data-block-size", type=int, default=4096, metavar="N")
    p.add_argument("--hash-block-size", type=int, default=4096, metavar="N")
    p.add_argument("--data-blocks", type=int, default=None, metavar="N")
    p.add_argument("--hash-offset", type=int, default=0, metavar="BYTES")
    p.add_argument("--format", dest="hash_type", type=int, default=1, choices=(0, 1))
    p.add_argument("--no-superblock", action="store_true", help="tree only, no header")
    p.add_argument("--salt", default=None, help="hex salt, or - for none (default: random)")
    if with_defaults:
        p.add_argument("--uuid", default=None, help="superblock UUID (default: random)")
        p.add_argument(
            "--allow-partial-tail",
            action="store_true",
            help="accept a data size that is not a block multiple (tail NOT protected)",
        )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("verity", help="dm-verity hash trees (veritysetup-compatible)")
    sub = parser.add_subparsers(dest="verity_cmd", metavar="SUBCOMMAND")
    sub.required = True

    fmt = sub.add_parser("format", help="write the hash tree of DATA to HASH, print the root hash")
    fmt.add_argument("data", type=Path)
    fmt.add_argument("hash_device", type=Path)
    _add_params(fmt, with_defaults=True)
    fmt.set_defaults(func=_format)

    ver = sub.add_parser("verify", help="check DATA against HASH and ROOTHASH")
    ver.add_argument("data", type=Path)
    ver.add_argument("hash_device", type=Path)
    ver.add_argument("root_hash")
    _add_params(ver, with_defaults=False)
    ver.set_defaults(func=_verify)

    dump = sub.add_parser("dump", help="print the superblock of HASH")
    dump.add_argument("hash_device", type=Path)
    dump.add_argument("--hash-offset", type=int, default=0, metavar="BYTES")
    dump.set_defaults(func=_dump)


def _params(args: argparse.Namespace, *, salt: bytes, uuid: bytes) -> Any:
    from trustpod.verity.core import VerityParams, check_algorithm, check_block_size

    check_algorithm(args.algorithm, ConfigError)
    check_block_size(args.data_block_size, "data block size", ConfigError)
    check_block_size(args.hash_block_size, "hash block size", ConfigError)
    if args.hash_offset < 0 or args.hash_offset % 512:
        raise ConfigError(
            f"--hash-offset {args.hash_offset} is not a multiple of 512",
            reason="verity.hash_offset",
        )
    return VerityParams(
        algorithm=args.algorithm,
        data_block_size=args.data_block_size,
        hash_block_size=args.hash_block_size,
        salt=salt,
        uuid=uuid,
        hash_type=args.hash_type,
        hash_offset=args.hash_offset,
        superblock=not args.no_superblock,
    )


def _format(args: argparse.Namespace) -> int:
    import uuid as uuidlib  # here, not at the top: ~9 ms of every CLI start

    from trustpod.verity.core import parse_salt, parse_uuid
    from trustpod.verity.files import describe, format_files
    from trustpod.verity.progress import terminal_progress

    salt = (
        os.urandom(_DEFAULT_SALT_BYTES) if args.salt is None else parse_salt(args.salt, ConfigError)
    )
    uuid = uuidlib.uuid4().bytes if args.uuid is None else parse_uuid(args.uuid, ConfigError)
    params = _params(args, salt=salt, uuid=uuid)
    result = format_files(
        args.data,
        args.hash_device,
        params,
        data_blocks=args.data_blocks,
        allow_partial_tail=args.allow_partial_tail,
        progress=terminal_progress("format"),
    )
    print(describe(str(args.hash_device), result.params, result.geometry, result.root_hash), end="")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from trustpod.verity.core import parse_salt
    from trustpod.verity.files import params_from_superblock, read_superblock, verify_files
    from trustpod.verity.progress import terminal_progress

    try:
        root = bytes.fromhex(args.root_hash)
    except ValueError as exc:
        raise ConfigError("ROOTHASH is not hexadecimal", reason="verity.root_hash") from exc
    if args.no_superblock:
        # (1) no header: every parameter comes from the command line, like veritysetup
        params = _params(args, salt=parse_salt(args.salt or "-", ConfigError), uuid=b"\0" * 16)
        blocks = args.data_blocks
        if blocks is None:
            blocks = args.data.stat().st_size // params.data_block_size
        params = replace(params, data_blocks=blocks)
    else:
        # (2) the superblock at --hash-offset carries the parameters
        sb = read_superblock(args.hash_device, args.hash_offset)
        params = params_from_superblock(sb, args.hash_offset)
    verify_files(args.data, args.hash_device, root, params, progress=terminal_progress("verify"))
    return 0


def _dump(args: argparse.Namespace) -> int:
    from trustpod.verity.core import TreeGeometry
    from trustpod.verity.files import describe, params_from_superblock, read_superblock

    params = params_from_superblock(
        read_superblock(args.hash_device, args.hash_offset), args.hash_offset
    )
    print(describe(str(args.hash_device), params, TreeGeometry.compute(params), None), end="")
    return 0
