"""The pod VM initramfs: busybox-static, ``veritysetup`` with its shared libraries, the boot
modules in insmod order and ``/init`` (``initramfs_init.sh``), as a reproducible gzip'd newc
cpio. The binaries come from this machine's Debian packages; their digests go into the build's
input digest (``InitramfsInputs.digest``) so a changed package gives a new image.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import stat
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from trustpod.errors import DependencyError
from trustpod.image.cpio import CpioEntry, newc_archive

__all__ = ["BUSYBOX", "VERITYSETUP", "InitramfsInputs", "build_initramfs", "collect_inputs"]

BUSYBOX = Path("/bin/busybox")
VERITYSETUP = Path("/usr/sbin/veritysetup")
_APPLETS = (
    "sh", "mount", "umount", "mkdir", "cat", "echo", "insmod", "sleep", "dd", "poweroff",
    "switch_root", "ls", "dmesg",
)  # fmt: skip
_LDD = re.compile(r"(/\S+) \(0x[0-9a-f]+\)")


@dataclass(frozen=True, slots=True)
class InitramfsInputs:
    #: archive path -> host file, for every binary/library/module
    files: tuple[tuple[str, Path], ...]
    modules: tuple[str, ...]  # archive names under lib/modules, insmod order
    init: bytes

    def digest(self) -> str:
        h = hashlib.sha256(b"trustpod initramfs v1\0")
        for name, path in self.files:
            h.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
        h.update("\0".join(self.modules).encode() + b"\0" + self.init)
        return h.hexdigest()


def _shared_libs(binary: Path) -> list[Path]:
    try:
        out = subprocess.run(
            ["ldd", str(binary)], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise DependencyError(f"ldd {binary} failed: {exc}", reason="image.tool_failed") from exc
    return sorted({Path(m.group(1)) for m in _LDD.finditer(out)})


def collect_inputs(modules: list[Path]) -> InitramfsInputs:
    for tool, pkg in ((BUSYBOX, "busybox-static"), (VERITYSETUP, "cryptsetup-bin")):
        if not tool.is_file():
            raise DependencyError(
                f"{tool} is missing", reason="image.tool_missing", fix=f"apt-get install {pkg}"
            )
    files: dict[str, Path] = {"bin/busybox": BUSYBOX, "sbin/veritysetup": VERITYSETUP}
    for lib in _shared_libs(VERITYSETUP):
        files[str(lib).lstrip("/")] = lib.resolve()
    names = []
    for ko in modules:
        files[f"lib/modules/{ko.name}"] = ko
        names.append(ko.name)
    init = resources.files("trustpod.image").joinpath("initramfs_init.sh").read_bytes()
    return InitramfsInputs(tuple(sorted(files.items())), tuple(names), init)


def _dirs(paths: list[str]) -> set[str]:
    out = set()
    for p in paths:
        parts = p.split("/")[:-1]
        out |= {"/".join(parts[: i + 1]) for i in range(len(parts))}
    return out


def build_initramfs(inputs: InitramfsInputs, out: Path, mtime: int = 0) -> None:
    """Write the gzip'd cpio (gzip header mtime 0, so bytes depend only on the inputs)."""
    entries: list[CpioEntry] = []
    paths = [name for name, _ in inputs.files]
    paths += ["init", "etc/trustpod/modules", *(f"bin/{a}" for a in _APPLETS)]
    for d in sorted(_dirs(paths) | {"proc", "sys", "dev", "run", "tmp"}):
        entries.append(CpioEntry(d, stat.S_IFDIR | 0o755))
    for name, path in inputs.files:
        mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
        entries.append(CpioEntry(name, stat.S_IFREG | mode, path.read_bytes()))
    for applet in _APPLETS:
        entries.append(CpioEntry(f"bin/{applet}", stat.S_IFLNK | 0o777, b"busybox"))
    entries.append(CpioEntry("init", stat.S_IFREG | 0o755, inputs.init))
    order = "".join(m + "\n" for m in inputs.modules).encode()
    entries.append(CpioEntry("etc/trustpod/modules", stat.S_IFREG | 0o644, order))
    data = gzip.compress(newc_archive(entries, mtime), compresslevel=6, mtime=0)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
