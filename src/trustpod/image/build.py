"""``trustpod image build``: read-only root image + verity hash device + boot manifest.

Layout of the output directory::

    root.img        the filesystem (squashfs or ext4), the dm-verity data device
    root.verity     its hash device (superblock + tree, veritysetup format)
    manifest.json   the boot manifest (command line with roothash=, digests, sizes, PCR 11)

Salt and superblock UUID default to values derived from the image digest, so the same rootfs
gives the same root hash, the same command line and the same PCR 11 (mkosi derives them from
its seed for the same reason).
"""

from __future__ import annotations

import hashlib
import os
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

from trustpod.errors import ConfigError
from trustpod.image.cmdline import build_cmdline
from trustpod.image.fsmakers import FilesystemMaker
from trustpod.image.manifest import BootManifest, FileEntry
from trustpod.verity.core import VerityParams
from trustpod.verity.files import format_files

__all__ = [
    "DEFAULT_CMDLINE_EXTRA",
    "HASH_NAME",
    "IMAGE_NAME",
    "MANIFEST_NAME",
    "BuildOptions",
    "build_image",
    "file_entry",
]

IMAGE_NAME = "root.img"
HASH_NAME = "root.verity"
MANIFEST_NAME = "manifest.json"
#: the rest of the peer-pod VM command line (guest doc §7)
DEFAULT_CMDLINE_EXTRA = (
    "console=ttyS0 systemd.firstboot=off systemd.volatile=state selinux=0 enforcing=0 audit=0"
)


@dataclass(frozen=True, slots=True)
class BuildOptions:
    algorithm: str = "sha256"
    data_block_size: int = 4096
    hash_block_size: int = 4096
    salt: bytes | None = None
    uuid: bytes | None = None
    cmdline_extra: str = DEFAULT_CMDLINE_EXTRA
    osrel: str | None = None
    data_device: str | None = None
    hash_device: str | None = None


def file_entry(path: Path, name: str) -> FileEntry:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            h.update(chunk)
    return FileEntry(name, path.stat().st_size, h.hexdigest())


def build_image(
    rootfs: Path, out_dir: Path, maker: FilesystemMaker, options: BuildOptions | None = None
) -> BootManifest:
    opts = options or BuildOptions()
    if not rootfs.is_dir():
        raise ConfigError(f"--rootfs {rootfs} is not a directory", reason="image.rootfs")
    out_dir.mkdir(parents=True, exist_ok=True)
    image, hash_dev = out_dir / IMAGE_NAME, out_dir / HASH_NAME
    # (1) the filesystem
    maker.make(rootfs, image)
    root_entry = file_entry(image, IMAGE_NAME)
    # (2) verity: salt/UUID derived from the image digest unless given
    seed = bytes.fromhex(root_entry.sha256)
    salt = (
        opts.salt if opts.salt is not None else hashlib.sha256(b"trustpod salt\0" + seed).digest()
    )
    uuid = (
        opts.uuid
        if opts.uuid is not None
        else uuidlib.UUID(
            bytes=hashlib.sha256(b"trustpod uuid\0" + seed).digest()[:16], version=4
        ).bytes
    )
    params = VerityParams(
        algorithm=opts.algorithm,
        data_block_size=opts.data_block_size,
        hash_block_size=opts.hash_block_size,
        salt=salt,
        uuid=uuid,
    )
    hash_dev.unlink(missing_ok=True)
    result = format_files(image, hash_dev, params)
    # (3) the measured command line and the manifest
    cmdline = build_cmdline(
        result.root_hash,
        result.params,
        data_device=opts.data_device,
        hash_device=opts.hash_device,
        extra=opts.cmdline_extra,
    )
    manifest = BootManifest.create(
        cmdline=cmdline,
        root_image=root_entry,
        hash_device=file_entry(hash_dev, HASH_NAME),
        filesystem=maker.name,
        osrel=opts.osrel,
    )
    tmp = out_dir / (MANIFEST_NAME + ".tmp")
    tmp.write_text(manifest.dumps())
    os.replace(tmp, out_dir / MANIFEST_NAME)
    return manifest
