"""The pod VM root filesystem from Debian packages (mmdebstrap) plus the trustpod wheel built
from this checkout and its guest dependencies (pip, pinned to this venv's versions), cached
by its inputs' digest.

Inputs of the digest: the suite, the package list, the apt index files (a new package version
in ``apt-get update`` changes them), the wheel's bytes, the pinned requirements and the files
trustpod adds (``/sbin/trustpod-init``). ``SOURCE_DATE_EPOCH`` makes mmdebstrap's output
reproducible for the same package versions; Python byte code is compiled with
``--invalidation-mode unchecked-hash`` (no mtimes: the squashfs has all times 0, and the root is
read-only, so timestamp pycs would be recompiled at every boot under TCG).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from trustpod.errors import DependencyError
from trustpod.image.tools import run_tool

__all__ = [
    "AGENT_REQUIREMENTS",
    "DEBIAN_PACKAGES",
    "DEBIAN_SUITE",
    "GUEST_TOML",
    "POD_VM_DIR",
    "RootfsPlan",
    "build_rootfs",
    "build_wheel",
    "plan_rootfs",
]

DEBIAN_SUITE = "bookworm"
#: python3 for the agent, runc for containers, busybox for the init, the TSS2 libraries that
#: tpm2-pytss loads (device TCTI for /dev/tpmrm0), util-linux for mount
DEBIAN_PACKAGES: tuple[str, ...] = (
    "busybox", "ca-certificates", "libtss2-esys-3.0.2-0", "libtss2-fapi1", "libtss2-mu0",
    "libtss2-rc0", "libtss2-sys1", "libtss2-tcti-device0", "libtss2-tctildr0", "python3",
    "runc", "util-linux",
)  # fmt: skip
#: the guest's Python distributions (pinned to the versions of this venv when installed)
AGENT_REQUIREMENTS: tuple[str, ...] = (
    "cryptography", "rfc8785", "httpx", "tomli-w", "tpm2-pytss", "protobuf", "zstandard",
    "pyyaml", "gordon-to-regorus", "jsonpatch", "starlette", "uvicorn",
)  # fmt: skip
_STATIC_BUSYBOX = Path("/bin/busybox")
#: the pod VM image directory ``trustpod.pod.guest_boot --image`` reads
POD_VM_DIR = "usr/share/trustpod/pod-vm"
#: the image's guest.toml: the attester found on the VM (the vTPM's HCL report -> az-snp-vtpm)
GUEST_TOML = """attester = "auto"
key_dir = "/run/trustpod/keys"
api_listen = "127.0.0.1:8006"
"""
_SITE = "usr/local/lib/python3.11/dist-packages"
_TIMEOUT_S = 1800.0
_ZIP_EPOCH = 315532800  # 1980-01-01, the earliest zip timestamp
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class RootfsPlan:
    suite: str
    packages: tuple[str, ...]
    requirements: tuple[str, ...]  # "name==version"
    apt_lists_sha256: str
    init: bytes
    #: the static busybox of the pause container (the Debian ``busybox`` is dynamic)
    busybox_sha256: str = ""

    def digest(self, wheel_sha256: str) -> str:
        doc = {
            "v": 1,
            "suite": self.suite,
            "packages": list(self.packages),
            "requirements": list(self.requirements),
            "apt_lists": self.apt_lists_sha256,
            "wheel": wheel_sha256,
            "init": hashlib.sha256(self.init).hexdigest(),
            "guest_toml": GUEST_TOML,
            "busybox": self.busybox_sha256,
            "epoch": os.environ.get("SOURCE_DATE_EPOCH", "0"),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _pin(name: str) -> str:
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return name


def _apt_lists_digest(lists: Path = Path("/var/lib/apt/lists")) -> str:
    h = hashlib.sha256()
    for p in sorted(lists.glob("*_Packages*")):
        h.update(p.name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def plan_rootfs() -> RootfsPlan:
    init = resources.files("trustpod.image").joinpath("podvm_init.sh").read_bytes()
    return RootfsPlan(
        DEBIAN_SUITE,
        DEBIAN_PACKAGES,
        tuple(_pin(r) for r in AGENT_REQUIREMENTS),
        _apt_lists_digest(),
        init,
        hashlib.sha256(_STATIC_BUSYBOX.read_bytes()).hexdigest(),
    )


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    package = "mmdebstrap" if argv[0] == "mmdebstrap" else ""
    run_tool(argv, timeout_s=_TIMEOUT_S, env=env, package=package, tail_lines=4)


def build_wheel(checkout: Path, out: Path) -> Path:
    """``pip wheel --no-deps`` of this checkout (includes the compiled agent descriptors)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("trustpod-*.whl"):
        old.unlink()
    # hatchling stamps SOURCE_DATE_EPOCH into the zip (>= 1980): same tree, same wheel bytes
    epoch = max(int(os.environ.get("SOURCE_DATE_EPOCH", "0")), _ZIP_EPOCH)
    argv = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(checkout)]
    _run(argv, dict(os.environ, SOURCE_DATE_EPOCH=str(epoch)))
    wheels = sorted(out.glob("trustpod-*.whl"))
    if len(wheels) != 1:
        raise DependencyError("pip wheel gave no trustpod wheel", reason="image.tool_failed")
    return wheels[0]


def _pause_rootfs(root: Path) -> None:
    """The pause container: static busybox and ``/pause`` (``sleep`` forever)."""
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_STATIC_BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    for applet in ("sh", "sleep"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "pause").write_text("#!/bin/sh\nexec sleep 2147483647\n")
    (root / "pause").chmod(0o755)


def _debian_base(plan: RootfsPlan, cache: Path, env: dict[str, str], progress: Progress) -> Path:
    """The mmdebstrap layer alone, ``cache/debian/<digest of suite, packages, apt lists>``:
    a new trustpod wheel reuses it (mmdebstrap is most of a cold build)."""
    doc = [plan.suite, list(plan.packages), plan.apt_lists_sha256, env["SOURCE_DATE_EPOCH"]]
    dest = cache / "debian" / hashlib.sha256(json.dumps(doc).encode()).hexdigest()
    if (dest / ".trustpod-debian").is_file():
        progress(f"Debian base cached: {dest}")
        return dest
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    progress(f"mmdebstrap {plan.suite} ({len(plan.packages)} packages + dependencies)")
    argv = ["mmdebstrap", "--quiet", "--variant=apt", f"--include={','.join(plan.packages)}"]
    argv += [f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale")]
    _run([*argv, plan.suite, str(tmp)], env)
    for cache_dir in ("var/cache/apt", "var/lib/apt/lists"):
        shutil.rmtree(tmp / cache_dir, ignore_errors=True)
        (tmp / cache_dir).mkdir(parents=True)
    (tmp / ".trustpod-debian").write_text("\n".join(map(str, doc)) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def build_rootfs(
    plan: RootfsPlan,
    wheel: Path,
    cache: Path,
    progress: Progress = lambda _m: None,
    local_images: Path | None = None,
) -> Path:
    """The rootfs directory ``cache/rootfs/<digest>`` (built once per input digest).

    ``local_images`` (unpacked container roots named like the agent's ``--local-images``)
    are copied to the pod VM image directory: pods then run without a registry."""
    wheel_sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    digest = plan.digest(wheel_sha)
    if local_images is not None:
        from trustpod.image.vmimage import tree_digest

        digest = hashlib.sha256(f"{digest}\0{tree_digest(local_images)}".encode()).hexdigest()
    dest = cache / "rootfs" / digest
    if (dest / ".trustpod-rootfs").is_file():
        progress(f"rootfs cached: {dest}")
        return dest
    env = dict(os.environ, SOURCE_DATE_EPOCH=os.environ.get("SOURCE_DATE_EPOCH", "0"))
    base = _debian_base(plan, cache, env, progress)
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    progress("copying the Debian base")
    # cp -a: device nodes (mmdebstrap's /dev), hard links, owners and modes as they are
    _run(["cp", "-a", "--reflink=auto", str(base), str(tmp)])
    (tmp / ".trustpod-debian").unlink()
    progress(f"pip: trustpod wheel + {len(plan.requirements)} guest requirements")
    argv = [sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--target"]
    argv += [str(tmp / _SITE), str(wheel), *plan.requirements]
    _run(argv, env)
    progress("byte-compiling (unchecked-hash pycs)")
    argv = ["chroot", str(tmp), "python3", "-m", "compileall", "-q", "-j0"]
    argv += ["--invalidation-mode", "unchecked-hash", "/usr/lib/python3.11", "/" + _SITE]
    _run(argv, env)
    _pause_rootfs(tmp / POD_VM_DIR / "pause" / "rootfs")
    (tmp / POD_VM_DIR / "guest.toml").write_text(GUEST_TOML)
    if local_images is not None:
        progress(f"local images from {local_images}")
        _run(["cp", "-a", str(local_images), str(tmp / POD_VM_DIR / "images")])
    init = tmp / "sbin" / "trustpod-init"
    init.write_bytes(plan.init)
    init.chmod(0o755)
    if not (tmp / "sbin" / "init").exists():  # --variant=apt has no init system
        (tmp / "sbin" / "init").symlink_to("trustpod-init")
    (tmp / ".trustpod-rootfs").write_text(digest + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest
