"""The pod VM kernel: Debian's ``linux-image-cloud-amd64``, fetched with ``apt-get download``
and unpacked with ``dpkg -x`` (never installed), and its modules in dependency order.

The .deb has no ``modules.dep`` and the guest has no ``modprobe`` in the initramfs, so the
``depends=`` field of each module's ``.modinfo`` section is read here and the modules are
ordered so that every module comes after what it depends on (``insmod`` order).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from trustpod.errors import ConfigError, DependencyError
from trustpod.image.tools import run_tool

__all__ = [
    "BOOT_MODULES",
    "KERNEL_META_PACKAGE",
    "Kernel",
    "fetch_kernel",
    "kernel_modules",
    "module_depends",
    "module_order",
    "resolve_kernel_package",
]

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
#: what the initramfs needs: virtio disk, device-mapper verity, squashfs, overlay
BOOT_MODULES: tuple[str, ...] = (
    "virtio_pci",
    "virtio_blk",
    "dm-verity",
    "squashfs",
    "overlay",
    "virtio_net",
    "isofs",
)
_APT_TIMEOUT_S = 300.0
_DEPENDS = re.compile(rb"(?:^|\0)depends=([^\0]*)\0")


@dataclass(frozen=True, slots=True)
class Kernel:
    package: str  # e.g. linux-image-6.1.0-57-cloud-amd64
    version: str  # the .deb version
    deb_sha256: str
    release: str  # uname -r
    root: Path  # the dpkg -x tree

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules_dir(self) -> Path:
        return self.root / "lib" / "modules" / self.release


def module_depends(ko: bytes) -> tuple[str, ...]:
    """The ``depends=`` list of a ``.ko`` file (its ``.modinfo`` strings)."""
    m = _DEPENDS.search(ko)
    if m is None:
        return ()
    return tuple(sorted(d for d in m.group(1).decode().split(",") if d))


def _norm(name: str) -> str:
    return name.replace("-", "_")


def module_order(wanted: tuple[str, ...], depends: dict[str, tuple[str, ...]]) -> list[str]:
    """``wanted`` and everything they need, dependencies first (depth-first, deterministic).

    ``depends`` maps a module name to its ``depends=``; names compare with ``-`` == ``_`` (as
    the kernel does). An unknown module or a cycle raises ``ConfigError``."""
    by_norm = {_norm(k): k for k in depends}
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        key = _norm(name)
        if key not in by_norm:
            raise ConfigError(f"kernel module {name!r} not found", reason="image.kernel")
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            raise ConfigError(f"module dependency cycle {chain}", reason="image.kernel")
        state[key] = 1
        for dep in depends[by_norm[key]]:
            visit(dep, (*chain, dep))
        state[key] = 2
        order.append(by_norm[key])

    for name in wanted:
        visit(name, (name,))
    return order


def _run(argv: list[str], cwd: Path) -> str:
    return run_tool(argv, timeout_s=_APT_TIMEOUT_S, cwd=cwd)


def resolve_kernel_package(meta: str = KERNEL_META_PACKAGE) -> tuple[str, str]:
    """(package, version) the meta package depends on, from the local apt lists."""
    out = _run(["apt-cache", "depends", meta], Path("/"))
    pkgs = re.findall(r"Depends: (linux-image-[0-9][^\s]*)", out)
    if not pkgs:
        raise DependencyError(f"{meta} has no linux-image dependency", reason="image.kernel")
    show = _run(["apt-cache", "show", "--no-all-versions", pkgs[0]], Path("/"))
    version = re.search(r"^Version: (\S+)", show, re.M)
    if version is None:
        raise DependencyError(f"no version for {pkgs[0]}", reason="image.kernel")
    return pkgs[0], version.group(1)


def fetch_kernel(cache: Path, package: str, version: str) -> Kernel:
    """Download and unpack ``package=version`` into ``cache/kernel/<package>_<version>``
    (reused when present)."""
    dest = cache / "kernel" / f"{package}_{version}"
    release = package.removeprefix("linux-image-")
    if (dest / "done").is_file():
        return Kernel(package, version, (dest / "done").read_text().strip(), release, dest / "x")
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _run(["apt-get", "download", f"{package}={version}"], tmp)
    debs = sorted(tmp.glob("*.deb"))
    if len(debs) != 1:
        raise DependencyError("apt-get download gave no single .deb", reason="image.kernel")
    digest = hashlib.sha256(debs[0].read_bytes()).hexdigest()
    _run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "x")], tmp)
    debs[0].unlink()
    (tmp / "done").write_text(digest + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return Kernel(package, version, digest, release, dest / "x")


def kernel_modules(kernel: Kernel, wanted: tuple[str, ...] = BOOT_MODULES) -> list[Path]:
    """The ``.ko`` files for ``wanted`` and their dependencies, in insmod order."""
    files = {p.name.split(".ko")[0]: p for p in kernel.modules_dir.rglob("*.ko*")}
    if not files:
        raise ConfigError(f"no modules under {kernel.modules_dir}", reason="image.kernel")
    if any(p.suffix != ".ko" for p in files.values()):
        raise ConfigError("compressed modules are not supported", reason="image.kernel")
    by_norm: dict[str, str] = {}
    for k in files:
        by_norm.setdefault(_norm(k), k)
    deps: dict[str, tuple[str, ...]] = {}
    pending = list(wanted)
    while pending:
        name = pending.pop()
        key = by_norm.get(_norm(name))
        if key is None or key in deps:
            continue
        deps[key] = module_depends(files[key].read_bytes())
        pending.extend(deps[key])
    return [files[m] for m in module_order(wanted, deps)]
