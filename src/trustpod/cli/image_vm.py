"""``trustpod image build --bootable [--dry-run]``: the bootable pod VM image (vmimage.py)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from trustpod.cli.progress import StepProgress, Ticker
from trustpod.errors import ConfigError

__all__ = ["build_bootable"]


class _Steps:
    """Each long step on stderr: plain ``[elapsed] step`` lines off a terminal; on a terminal the
    running step is a live line with a spinner and its elapsed time (cli/progress.py), replaced by
    its timed line when the next step starts."""

    def __init__(self, writer: TextIO) -> None:
        self._t0 = time.monotonic()
        self._w = writer
        self._live = StepProgress(writer, time.monotonic) if writer.isatty() else None
        self._ticker = Ticker(self._live) if self._live is not None else None
        self._step: tuple[str, float] | None = None

    def __enter__(self) -> _Steps:
        if self._ticker is not None:
            self._ticker.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish()
        if self._ticker is not None:
            self._ticker.__exit__(*exc)

    def __call__(self, msg: str) -> None:
        if self._live is None:
            print(f"[{time.monotonic() - self._t0:7.1f} s] {msg}", file=self._w, flush=True)
            return
        self._finish()
        self._step = (msg, time.monotonic())
        self._live.begin(msg)

    def _finish(self) -> None:
        if self._live is not None and self._step is not None:
            label, started = self._step
            self._live.done(label, max(time.monotonic() - started, 1e-6))
            self._step = None


def build_bootable(args: argparse.Namespace) -> int:
    from trustpod.image.kernel import BOOT_MODULES, resolve_kernel_package
    from trustpod.image.rootfs import plan_rootfs
    from trustpod.image.vmimage import VM_CMDLINE_EXTRA, cache_root

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
    with _Steps(sys.stderr) as say:
        return _build(args, say, cache, package, version)


def _build(
    args: argparse.Namespace,
    say: Callable[[str], None],
    cache: Path,
    package: str,
    version: str,
) -> int:
    from trustpod.image.fsmakers import maker_for
    from trustpod.image.kernel import fetch_kernel
    from trustpod.image.rootfs import build_rootfs, build_wheel, plan_rootfs
    from trustpod.image.vmimage import build_vm_image

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
