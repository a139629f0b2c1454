"""Kernel-checked dm-verity: the pod VM image boots under QEMU (TCG) with the trustpod
initramfs; the Linux kernel's dm-verity, not our verifier, stops a flipped byte or a wrong
root hash. The root is a tiny busybox tree whose init prints a marker and powers off.

~3 boots of ~13 s each under TCG; the kernel .deb and the built image are cached by input
digest under ``trustpod.image.vmimage.cache_root()`` (outside the clone).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from trustpod.image.fsmakers import maker_for
from trustpod.image.kernel import fetch_kernel, resolve_kernel_package
from trustpod.image.qemu import QemuConfig, boot_once
from trustpod.image.vmimage import VmImage, build_vm_image, cache_root

pytestmark = [pytest.mark.vm, pytest.mark.slow]
OK = "TRUSTPOD-ROOT-OK"


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (apt-get install {package})")


def _tiny_rootfs(base: Path) -> Path:
    root = base / "rootfs"
    for d in ("bin", "sbin", "proc", "sys", "dev", "tmp"):
        (root / d).mkdir(parents=True)
    shutil.copyfile("/bin/busybox", root / "bin/busybox")
    (root / "bin/busybox").chmod(0o755)
    (root / "bin/sh").symlink_to("busybox")
    init = root / "sbin/init"
    init.write_text(f"#!/bin/sh\n/bin/busybox echo {OK}\n/bin/busybox poweroff -f\n")
    init.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> VmImage:
    _need("qemu-system-x86_64", "qemu-system-x86")
    _need("mksquashfs", "squashfs-tools")
    _need("veritysetup", "cryptsetup-bin")
    if not Path("/bin/busybox").is_file():
        pytest.skip("no /bin/busybox (apt-get install busybox-static)")
    base = tmp_path_factory.mktemp("vm")
    cache = cache_root()
    kernel = fetch_kernel(cache, *resolve_kernel_package())
    return build_vm_image(
        _tiny_rootfs(base), base / "out", maker_for("squashfs"), kernel, cache=cache
    )


def _boot(image: VmImage, disk: Path, cmdline: str, console: Path) -> str:
    cfg = QemuConfig(image.vmlinuz, image.initrd, disk, cmdline, console)
    return boot_once(cfg).console


def test_good_image_boots(image: VmImage, tmp_path: Path) -> None:
    console = _boot(image, image.disk, image.cmdline, tmp_path / "console.log")
    assert f"root verified (roothash={image.info['cmdline'].split()[0][9:]})" in console
    assert OK in console
    assert "corrupted" not in console


def test_one_flipped_byte_stops_the_boot(image: VmImage, tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    shutil.copyfile(image.disk, disk)
    # a byte in the middle of the root filesystem (partition 1 starts at 1 MiB)
    size = json.loads((image.out / "manifest.json").read_text())["root_image"]["size"]
    with disk.open("r+b") as f:
        f.seek(1024 * 1024 + size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x01]))
    console = _boot(image, disk, image.cmdline, tmp_path / "console.log")
    assert re.search(r"device-mapper: verity: \S+ data block \d+ is corrupted", console)
    assert "dm-verity device corrupted" in console
    assert OK not in console


def test_wrong_root_hash_stops_the_boot(image: VmImage, tmp_path: Path) -> None:
    good = image.cmdline.split()[0].removeprefix("roothash=")
    wrong = ("1" if good[0] == "0" else "0") + good[1:]
    cmdline = image.cmdline.replace(f"roothash={good}", f"roothash={wrong}")
    console = _boot(image, image.disk, cmdline, tmp_path / "console.log")
    assert re.search(r"device-mapper: verity: \S+ (metadata|data) block \d+ is corrupted", console)
    assert "dm-verity device corrupted" in console
    assert OK not in console


def test_cached_rebuild_is_identical(image: VmImage, tmp_path: Path) -> None:
    kernel = fetch_kernel(cache_root(), *resolve_kernel_package())
    again = build_vm_image(
        _tiny_rootfs(tmp_path), tmp_path / "out", maker_for("squashfs"), kernel, cache=cache_root()
    )
    assert again.cached and again.input_digest == image.input_digest
    # and without the cache the same inputs give the same bytes (reproducible)
    fresh = build_vm_image(
        _tiny_rootfs(tmp_path / "b"), tmp_path / "fresh", maker_for("squashfs"), kernel, vhd=True
    )
    assert not fresh.cached
    for name in ("initrd.img", "disk.raw", "disk.vhd", "manifest.json"):
        assert (fresh.out / name).read_bytes() == (image.out / name).read_bytes(), name
