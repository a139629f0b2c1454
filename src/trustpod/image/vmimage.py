"""``trustpod image build --bootable``: the whole pod VM, cached by its inputs' digest.

Output directory (next to ``root.img``/``root.verity``/``manifest.json`` of ``build.py``)::

    vmlinuz        Debian's cloud kernel (linux-image-cloud-amd64), byte for byte
    initrd.img     busybox + veritysetup + boot modules + /init (initramfs.py)
    disk.raw       GPT: partition 1 = root.img (verity data), 2 = root.verity (hash device)
    disk.vhd       disk.raw + fixed-VHD footer (Azure)
    vm.json        kernel, initrd, disk digests, the kernel command line, the input digest

The command line is the manifest's (``roothash=`` + ``systemd.verity_root_*``) with the devices
``/dev/vda1``/``/dev/vda2`` (the initramfs has no udev for ``/dev/disk/by-partuuid``). A build
whose input digest (rootfs tree, kernel .deb, initramfs inputs, options) matches the one in
``CACHE/vm/<digest>`` is copied from there instead of rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustpod.image.build import MANIFEST_NAME, BuildOptions, build_image, file_entry
from trustpod.image.disk import MIB, gpt_disk_head_tail, layout_for, vhd_footer
from trustpod.image.fsmakers import FilesystemMaker
from trustpod.image.initramfs import build_initramfs, collect_inputs
from trustpod.image.kernel import BOOT_MODULES, Kernel, kernel_modules

__all__ = [
    "VM_CMDLINE_EXTRA",
    "VM_JSON",
    "VmImage",
    "build_vm_image",
    "cache_root",
    "tree_digest",
    "write_disk",
]

VM_JSON = "vm.json"
#: the rest of the command line for the trustpod initramfs (panic=-1: a panic ends the VM)
VM_CMDLINE_EXTRA = "console=ttyS0 panic=-1 loglevel=4"
DATA_DEVICE, HASH_DEVICE = "/dev/vda1", "/dev/vda2"
Progress = Callable[[str], None]


def cache_root() -> Path:
    """``$TRUSTPOD_CACHE``, else ``$XDG_CACHE_HOME/trustpod``, else ``/var/cache/trustpod`` as
    root, else ``~/.cache/trustpod``: outside the clone, so a fresh CI clone reuses it."""
    if env := os.environ.get("TRUSTPOD_CACHE"):
        return Path(env)
    if env := os.environ.get("XDG_CACHE_HOME"):
        return Path(env) / "trustpod"
    if os.geteuid() == 0:
        return Path("/var/cache/trustpod")
    return Path.home() / ".cache" / "trustpod"


def tree_digest(root: Path) -> str:
    """sha256 over the sorted tree: path, type, mode, size, content / link target."""
    h = hashlib.sha256(b"trustpod tree v1\0")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            p = Path(dirpath) / name
            st = p.lstat()
            h.update(str(p.relative_to(root)).encode() + b"\0" + b"%o\0" % st.st_mode)
            if p.is_symlink():
                h.update(os.readlink(p).encode())
            elif p.is_file():
                with p.open("rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
            h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class VmImage:
    out: Path
    cmdline: str
    input_digest: str
    cached: bool
    info: dict[str, Any]

    @property
    def vmlinuz(self) -> Path:
        return self.out / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.out / "initrd.img"

    @property
    def disk(self) -> Path:
        return self.out / "disk.raw"


def write_disk(root_img: Path, hash_img: Path, root_hash: bytes, out: Path) -> int:
    """disk.raw with the two partitions; returns its size (a multiple of 1 MiB)."""
    layout = layout_for(root_hash, root_img.stat().st_size, hash_img.stat().st_size)
    head, tail = gpt_disk_head_tail(layout)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as f:
        f.truncate(layout.size)
        f.write(head)
        for part, src in zip(layout.partitions, (root_img, hash_img), strict=True):
            f.seek(part.first_lba * 512)
            with src.open("rb") as s:
                shutil.copyfileobj(s, f, 4 * MIB)
        f.seek(layout.size - len(tail))
        f.write(tail)
    tmp.replace(out)
    return layout.size


def _write_vhd(raw: Path, size: int, root_hash: bytes, out: Path, epoch: int) -> None:
    tmp = out.with_name(out.name + ".tmp")
    with raw.open("rb") as s, tmp.open("wb") as f:
        shutil.copyfileobj(s, f, 4 * MIB)
        f.write(vhd_footer(size, hashlib.sha256(b"vhd\0" + root_hash).digest()[:16], epoch))
    tmp.replace(out)


def _copy_tree(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)


def _rootfs_key(rootfs: Path, cache: Path | None, progress: Progress) -> str:
    """What the image depends on of the root tree: a rootfs ``build_rootfs`` made in this cache
    (``cache/rootfs/<input digest>`` with that digest in its marker, written last) is named by
    its input digest, as it is built reproducibly from those inputs; any other tree is hashed."""
    marker = rootfs / ".trustpod-rootfs"
    if cache is not None and rootfs.parent == cache / "rootfs" and marker.is_file():
        if marker.read_text().strip() == rootfs.name:
            return f"inputs:{rootfs.name}"
    progress("hashing the root tree")
    return tree_digest(rootfs)


def build_vm_image(
    rootfs: Path,
    out: Path,
    maker: FilesystemMaker,
    kernel: Kernel,
    *,
    cache: Path | None = None,
    vhd: bool = True,
    cmdline_extra: str = VM_CMDLINE_EXTRA,
    progress: Progress = lambda _msg: None,
) -> VmImage:
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    modules = kernel_modules(kernel, BOOT_MODULES)
    inputs = collect_inputs(modules)
    t0 = time.monotonic()
    key_src = {
        "v": 1,
        "rootfs": _rootfs_key(rootfs, cache, progress),
        "fs": maker.name,
        "kernel": [kernel.package, kernel.version, kernel.deb_sha256],
        "initramfs": inputs.digest(),
        "cmdline_extra": cmdline_extra,
        "vhd": vhd,
        "epoch": epoch,
    }
    digest = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()
    progress(f"input digest {digest[:16]} ({time.monotonic() - t0:.1f} s)")
    cached = cache / "vm" / digest if cache is not None else None
    if cached is not None and (cached / VM_JSON).is_file():
        progress(f"cached: {cached}")
        _copy_tree(cached, out)
        info = json.loads((out / VM_JSON).read_text())
        return VmImage(out, info["cmdline"], digest, True, info)
    out.mkdir(parents=True, exist_ok=True)
    progress(f"{maker.name} root filesystem + dm-verity hash tree")
    opts = BuildOptions(
        cmdline_extra=cmdline_extra, data_device=DATA_DEVICE, hash_device=HASH_DEVICE
    )
    manifest = build_image(rootfs, out, maker, opts)
    progress(f"root {manifest.root_image.size >> 20} MiB, roothash={manifest.root_hash}")
    shutil.copyfile(kernel.vmlinuz, out / "vmlinuz")
    progress(f"initramfs ({len(modules)} modules in insmod order)")
    build_initramfs(inputs, out / "initrd.img", epoch)
    progress("GPT disk")
    root_hash = bytes.fromhex(manifest.root_hash)
    size = write_disk(out / "root.img", out / "root.verity", root_hash, out / "disk.raw")
    files = ["vmlinuz", "initrd.img", "disk.raw", MANIFEST_NAME]
    if vhd:
        progress("fixed VHD")
        _write_vhd(out / "disk.raw", size, root_hash, out / "disk.vhd", epoch)
        files.append("disk.vhd")
    info = {
        "schema": "trustpod.vm-image/v1",
        "cmdline": manifest.cmdline,
        "input_digest": digest,
        "inputs": key_src,
        "modules": [m.name for m in modules],
        "files": [file_entry(out / n, n).to_json() for n in files],
    }
    (out / VM_JSON).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    if cached is not None:
        progress(f"caching in {cached}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        _copy_tree(out, cached)
    return VmImage(out, manifest.cmdline, digest, False, info)
