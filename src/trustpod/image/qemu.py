"""Boot a pod VM image under qemu-system-x86_64 (TCG; KVM only where ``/dev/kvm`` really
works), serial console to a file. The subprocess edge for tests, the benchmark and the ``qemu``
pod provider.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from trustpod.errors import DependencyError

__all__ = [
    "BOOT_TIMEOUT_S",
    "BootResult",
    "QemuConfig",
    "boot_once",
    "kvm_usable",
    "qemu_argv",
]

QEMU = "qemu-system-x86_64"
#: longest a test boot may take under TCG
BOOT_TIMEOUT_S = 120.0


def kvm_usable() -> bool:
    """``/dev/kvm`` opens and a probe VM starts (``TRUSTPOD_QEMU_ACCEL`` overrides). On this
    machine the device exists but every VM fails, so only an explicit probe counts."""
    forced = os.environ.get("TRUSTPOD_QEMU_ACCEL")
    if forced:
        return forced == "kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or shutil.which(QEMU) is None:
        return False
    argv = [QEMU, "-machine", "q35,accel=kvm", "-cpu", "host", "-m", "64", "-display", "none"]
    argv += ["-no-reboot", "-monitor", "none", "-serial", "none", "-net", "none"]
    try:
        res = subprocess.run(argv, capture_output=True, timeout=3, check=False)
    except subprocess.TimeoutExpired:
        return True  # still running after 3 s: the vCPU works
    return res.returncode == 0


@dataclass(frozen=True, slots=True)
class QemuConfig:
    kernel: Path
    initrd: Path
    disk: Path
    cmdline: str
    console: Path
    memory_mib: int = 1024
    smp: int = 2
    accel: str = "tcg"
    #: extra qemu arguments (vTPM chardev/device, cidata disk, netdev)
    extra: tuple[str, ...] = field(default=())


def qemu_argv(cfg: QemuConfig) -> list[str]:
    cpu = "host" if cfg.accel == "kvm" else "max"
    argv = [QEMU, "-machine", f"q35,accel={cfg.accel}", "-cpu", cpu, "-smp", str(cfg.smp)]
    argv += ["-m", str(cfg.memory_mib), "-nographic", "-no-reboot", "-monitor", "none"]
    argv += ["-serial", f"file:{cfg.console}", "-kernel", str(cfg.kernel)]
    argv += ["-initrd", str(cfg.initrd), "-append", cfg.cmdline]
    argv += ["-drive", f"file={cfg.disk},if=virtio,format=raw,readonly=on"]
    if not any(a.startswith("-net") for a in cfg.extra):
        argv += ["-net", "none"]
    return argv + list(cfg.extra)


@dataclass(frozen=True, slots=True)
class BootResult:
    returncode: int
    console: str
    seconds: float


def boot_once(cfg: QemuConfig, timeout_s: float = BOOT_TIMEOUT_S) -> BootResult:
    """Run the VM until it powers off (or ``timeout_s``); return its console text."""
    if shutil.which(QEMU) is None:
        raise DependencyError(
            f"{QEMU} is not installed",
            reason="image.tool_missing",
            fix="apt-get install qemu-system-x86",
        )
    t0 = time.monotonic()
    proc = subprocess.Popen(
        qemu_argv(cfg), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _, err = proc.communicate(timeout=timeout_s)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        rc = -9
    text = cfg.console.read_text(errors="replace") if cfg.console.exists() else ""
    if rc not in (0, -9) and not text:
        raise DependencyError(
            f"{QEMU} failed (exit {rc}): {err.decode(errors='replace').strip()[-300:]}",
            reason="image.tool_failed",
        )
    return BootResult(rc, text, time.monotonic() - t0)
