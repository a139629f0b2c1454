"""The pod VM kernel command line: root hash and verity parameters, systemd-veritysetup style.

Facts (systemd-veritysetup-generator(8)): ``roothash=`` takes the root hash in hex; without
``systemd.verity_root_data=``/``systemd.verity_root_hash=`` the data and hash partitions are
found by GPT partition UUIDs derived from the first and the last 128 bits of the root hash;
``systemd.verity_root_options=`` takes comma-separated veritysetup options: ``superblock=``,
``format=``, ``data-block-size=``, ``hash-block-size=``, ``data-blocks=``, ``hash-offset=``,
``salt=``, ``uuid=``, ``hash=`` (plus corruption-handling flags). Pure functions, no I/O.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field

from trustpod.errors import EvidenceError
from trustpod.verity.core import VerityParams, parse_salt, parse_uuid

__all__ = ["VerityCmdline", "build_cmdline", "derived_partition_uuids", "parse_cmdline"]

_BOOL = {"1": True, "yes": True, "true": True, "on": True, "0": False, "no": False}
_BOOL |= {"false": False, "off": False}
#: options we pin in the measured command line (everything that shapes the tree)
_PARAM_KEYS: tuple[str, ...] = ("hash", "data-block-size", "hash-block-size", "data-blocks")
_PARAM_KEYS += ("hash-offset", "salt", "uuid", "format", "superblock")


def derived_partition_uuids(root_hash: bytes) -> tuple[str, str]:
    """(data, hash) partition UUIDs: first and last 128 bits of the root hash (man page)."""
    return str(uuidlib.UUID(bytes=root_hash[:16])), str(uuidlib.UUID(bytes=root_hash[-16:]))


@dataclass(frozen=True, slots=True)
class VerityCmdline:
    root_hash: bytes
    params: VerityParams
    data_device: str | None = None
    hash_device: str | None = None
    #: flags without a value (``panic-on-corruption``, ...)
    flags: tuple[str, ...] = field(default=())
    #: the ``key=value`` options exactly as given (what the command line pins)
    options: tuple[tuple[str, str], ...] = field(default=())

    @property
    def pinned(self) -> frozenset[str]:
        return frozenset(k for k, _ in self.options)


def _options(params: VerityParams) -> str:
    opts = [
        f"superblock={'true' if params.superblock else 'false'}",
        f"format={params.hash_type}",
        f"hash={params.algorithm}",
        f"data-block-size={params.data_block_size}",
        f"hash-block-size={params.hash_block_size}",
        f"data-blocks={params.data_blocks}",
        f"hash-offset={params.hash_offset}",
        f"salt={params.salt.hex() if params.salt else '-'}",
    ]
    if params.superblock:
        opts.append(f"uuid={params.uuid_text}")
    return ",".join(opts)


def build_cmdline(
    root_hash: bytes,
    params: VerityParams,
    *,
    data_device: str | None = None,
    hash_device: str | None = None,
    extra: str = "",
    flags: tuple[str, ...] = ("panic-on-corruption",),
) -> str:
    """``roothash=... systemd.verity_root_data=... systemd.verity_root_hash=...
    systemd.verity_root_options=...`` followed by ``extra``.

    The devices default to ``/dev/disk/by-partuuid/<uuid>`` with the UUIDs derived from the root
    hash (the partitions systemd would look for without these options)."""
    data_uuid, hash_uuid = derived_partition_uuids(root_hash)
    data_device = data_device or f"/dev/disk/by-partuuid/{data_uuid}"
    hash_device = hash_device or f"/dev/disk/by-partuuid/{hash_uuid}"
    for dev in (data_device, hash_device):
        if not dev or any(c.isspace() for c in dev):
            raise EvidenceError(
                f"device {dev!r} cannot go on a command line", reason="image.cmdline"
            )
    options = ",".join([_options(params), *flags])
    words = [
        f"roothash={root_hash.hex()}",
        f"systemd.verity_root_data={data_device}",
        f"systemd.verity_root_hash={hash_device}",
        f"systemd.verity_root_options={options}",
    ]
    return " ".join(words + ([extra.strip()] if extra.strip() else []))


def _int(key: str, value: str) -> int:
    try:
        return int(value, 10)
    except ValueError as exc:
        raise EvidenceError(f"{key}={value!r} is not a number", reason="image.cmdline") from exc


def parse_cmdline(cmdline: str) -> VerityCmdline:
    """Read the root hash and verity options back; the last occurrence of a key wins (kernel)."""
    args: dict[str, str] = {}
    for word in cmdline.split():
        key, _, value = word.partition("=")
        args[key] = value
    if "roothash" not in args:
        raise EvidenceError(
            "kernel command line has no roothash=",
            reason="image.no_roothash",
            fix="boot the image with the command line from its boot manifest",
        )
    try:
        root = bytes.fromhex(args["roothash"])
    except ValueError as exc:
        raise EvidenceError("roothash= is not hexadecimal", reason="image.cmdline") from exc
    kv: dict[str, str] = {}
    flags: list[str] = []
    for opt in filter(None, args.get("systemd.verity_root_options", "").split(",")):
        key, sep, value = opt.partition("=")
        if sep:
            kv[key] = value
        else:
            flags.append(key)
    unknown = set(kv) - set(_PARAM_KEYS)
    if unknown:
        raise EvidenceError(
            f"unsupported verity option(s) {sorted(unknown)}", reason="image.cmdline"
        )
    superblock = _BOOL.get(kv.get("superblock", "true").lower())
    if superblock is None:
        raise EvidenceError("superblock= is not a boolean", reason="image.cmdline")
    params = VerityParams(
        algorithm=kv.get("hash", "sha256"),
        data_block_size=_int("data-block-size", kv.get("data-block-size", "4096")),
        hash_block_size=_int("hash-block-size", kv.get("hash-block-size", "4096")),
        data_blocks=_int("data-blocks", kv.get("data-blocks", "1")),
        salt=parse_salt(kv.get("salt", "-")),
        uuid=parse_uuid(kv["uuid"]) if "uuid" in kv else b"\0" * 16,
        hash_type=_int("format", kv.get("format", "1")),
        hash_offset=_int("hash-offset", kv.get("hash-offset", "0")),
        superblock=superblock,
    )
    return VerityCmdline(
        root_hash=root,
        params=params,
        data_device=args.get("systemd.verity_root_data"),
        hash_device=args.get("systemd.verity_root_hash"),
        flags=tuple(flags),
        options=tuple(sorted(kv.items())),
    )
