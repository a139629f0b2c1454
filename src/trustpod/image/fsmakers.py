"""Read-only root filesystem makers: the subprocess edge behind the ``FilesystemMaker`` port.

Both produce reproducible images from a directory (same tree -> same bytes): all files owned by
root, fixed timestamps (``-mkfs-time 0 -all-time 0`` / ``E2FSPROGS_FAKE_TIME``), fixed UUIDs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

from trustpod.errors import ConfigError
from trustpod.image.tools import run_tool

__all__ = [
    "MAKERS",
    "TOOL_TIMEOUT_S",
    "Ext4Maker",
    "FilesystemMaker",
    "SquashfsMaker",
    "maker_for",
]

log = logging.getLogger(__name__)

#: longest a filesystem tool may run
TOOL_TIMEOUT_S = 600.0
#: fixed ext4 UUID / hash seed so the image is reproducible (any constant works)
EXT4_UUID = "6f9c2c2e-6d2c-4b5e-9a51-747275737470"


class FilesystemMaker(Protocol):
    """Makes a read-only filesystem image ``out`` holding the tree at ``rootfs``."""

    name: str

    def make(self, rootfs: Path, out: Path) -> None: ...


def _run(
    argv: list[str], env_extra: dict[str, str], package: str, drop_env: tuple[str, ...] = ()
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in drop_env} | env_extra
    run_tool(argv, timeout_s=TOOL_TIMEOUT_S, env=env, package=package)


class SquashfsMaker:
    """``mksquashfs`` (squashfs-tools): compressed, padded to 4 KiB, reproducible."""

    name = "squashfs"

    def make(self, rootfs: Path, out: Path) -> None:
        argv = ["mksquashfs", str(rootfs), str(out), "-noappend", "-reproducible"]
        argv += ["-comp", "gzip", "-all-root", "-no-xattrs", "-mkfs-time", "0", "-all-time", "0"]
        argv += ["-no-progress", "-quiet"]
        _run(argv, {}, "squashfs-tools", drop_env=("SOURCE_DATE_EPOCH",))


class Ext4Maker:
    """``mke2fs -d`` (e2fsprogs): ext4 without journal, sized from the tree plus slack."""

    name = "ext4"
    slack_bytes = 16 * 1024 * 1024

    def make(self, rootfs: Path, out: Path) -> None:
        used = sum((p.lstat().st_size + 4095) // 4096 * 4096 + 4096 for p in rootfs.rglob("*"))
        size_k = (used * 5 // 4 + self.slack_bytes) // 1024
        size_k -= size_k % 4
        out.unlink(missing_ok=True)
        argv = ["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-O", "^has_journal"]
        argv += ["-U", EXT4_UUID, "-E", f"root_owner=0:0,hash_seed={EXT4_UUID}", "-L", "root"]
        argv += ["-d", str(rootfs), str(out), f"{size_k}k"]
        _run(argv, {"E2FSPROGS_FAKE_TIME": "1", "SOURCE_DATE_EPOCH": "0"}, "e2fsprogs")


MAKERS: dict[str, type[SquashfsMaker] | type[Ext4Maker]] = {
    "squashfs": SquashfsMaker,
    "ext4": Ext4Maker,
}


def maker_for(name: str) -> FilesystemMaker:
    try:
        return MAKERS[name]()
    except KeyError as exc:
        raise ConfigError(
            f"unknown filesystem {name!r}", reason="image.fs", fix="use squashfs or ext4"
        ) from exc
