"""``trustpod image build --bootable [--dry-run]``: the bootable pod VM image (vmimage.py)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from trustpod.errors import ConfigError

__all__ = ["build_bootable"]


def _progress() -> Callable[[str], None]:
    """Each long step on stderr with the elapsed time."""
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f} s] {msg}", file=sys.stderr, flush=True)

    return say


def build_bootable(args: argparse.Namespace) -> int:
    from trustpod.image.fsmakers import maker_for
    from trustpod.image.kernel import BOOT_MODULES, fetch_kernel, resolve_kernel_package
    from trustpod.image.rootfs import build_rootfs, build_wheel, plan_rootfs
    from trustpod.image.vmimage import VM_CMDLINE_EXTRA, build_vm_image, cache_root

    if args.dry_run and not args.bootable:
        raise ConfigError("--dry-run goes with --bootable", reason="image.dry_run")
    cache = args.cache_dir or cache_root()
    package, version = resolve_kernel_package()
    if args.dry_run:
        print(f"kernel:    {package} {version} (apt-get download + dpkg -x, cached in {cache})")
        print(f"initramfs: busybox-static, veritysetup + its libraries, modules {BOOT_MODULES}")
        if args.rootfs is None:
            plan = plan_rootfs()
            print(f"rootfs:    mmdebstrap --variant=apt {plan.suite}: {', '.join(plan.packages)}")
            print(f"           + trustpod wheel from {args.checkout.resolve()}")
            print(f"           + pip: {' '.join(plan.requirements)}")
        else:
            print(f"rootfs:    {args.rootfs}")
        print(f"root fs:   {args.fs} + dm-verity ({args.algorithm}) -> root.img, root.verity")
        print("disk:      disk.raw (GPT: 1 = verity data, 2 = verity hash; 1 MiB aligned)")
        if not args.no_vhd:
            print("           disk.vhd (fixed VHD footer, Azure)")
        print(f"cmdline:   roothash=<root hash> systemd.verity_root_*=... {VM_CMDLINE_EXTRA}")
        print(f"out:       {args.out} (vmlinuz, initrd.img, disk.raw, manifest.json, vm.json)")
        return 0
    say = _progress()
    say(f"kernel {package} {version}")
    kernel = fetch_kernel(cache, package, version)
    rootfs = args.rootfs
    if rootfs is None:
        say("trustpod wheel")
        wheel = build_wheel(args.checkout, cache / "wheel")
        rootfs = build_rootfs(
            plan_rootfs(), wheel, cache, progress=say, local_images=args.local_images
        )
    image = build_vm_image(
        rootfs, args.out, maker_for(args.fs), kernel, cache=cache, vhd=not args.no_vhd, progress=say
    )
    say("done" + (" (from the cache)" if image.cached else ""))
    print(f"disk:      {image.disk}")
    print(f"kernel:    {image.vmlinuz}")
    print(f"initrd:    {image.initrd}")
    print(f"cmdline:   {image.cmdline}")
    print(f"digest:    {image.input_digest}")
    return 0
