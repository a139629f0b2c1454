"""``qemu``: the pod VM is a real VM, the bootable image of ``trustpod image build --bootable``
under qemu-system-x86_64 (TCG; KVM only where ``/dev/kvm`` really works).

Per instance (``VM_ROOT/<name>``, mode 0700): ``cidata.iso`` (the userdata, ISO 9660 label
``cidata``, as CAA's libvirt provider), a swtpm vTPM (``tpm-crb`` over a unix control socket,
state in ``tpm/``), ``console.log`` (serial console), and qemu with user-mode networking
``restrict=on``: the agent's forwarder port is reachable only as ``hostfwd`` on 127.0.0.1, and
the guest reaches exactly the host ports listed in ``forward`` (KBS, registry) at
``10.0.2.100:PORT`` through ``guestfwd`` to 127.0.0.1. The image's root is opened as dm-verity
by its initramfs; a mismatch ends the VM and ``instance_error`` reports the console's verity
line. Processes are stopped by their PIDs only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustpod._internal.private_dirs import make_private_dirs
from trustpod.errors import ConfigError, DependencyError
from trustpod.image.cidata import write_cidata
from trustpod.image.qemu import QemuConfig, kvm_usable, qemu_argv
from trustpod.pod.provider import Instance, InstanceTypeSpec, instance_name

__all__ = [
    "AGENT_SOCKET",
    "APF_PORT",
    "GUEST_HOST_IP",
    "SERVING_MARKER",
    "QemuProvider",
    "QemuSettings",
    "qemu_provider",
]

#: where the agent listens inside the VM (apf.json) and the forwarder's port on the NIC
AGENT_SOCKET = "/run/peerpod/agent.sock"
APF_PORT = 15150
GUEST_IP = "10.0.2.15"
#: the address at which the guest reaches the forwarded host ports
GUEST_HOST_IP = "10.0.2.100"
_SWTPM_START_S = 10.0
_BUSYBOX = "/bin/busybox"
_TPM_SOCK = "tpm/ctrl.sock"
_PARAVISOR_SOCK = "tpm/para.sock"
#: ``trustpod agent serve`` prints this JSON line once its sockets are bound
SERVING_MARKER = '{"agent": '


@dataclass(frozen=True, slots=True)
class QemuSettings:
    """``[qemu]`` of the pod config."""

    image_dir: Path  # vmlinuz, initrd.img, disk.raw, vm.json
    vm_root: Path
    memory_mib: int = 1024
    smp: int = 2
    vtpm: bool = True
    #: host ports on 127.0.0.1 the guest may reach at GUEST_HOST_IP:PORT (KBS, registry)
    forward: tuple[int, ...] = field(default=())
    stop_timeout_s: float = 10.0
    #: longest from qemu start to the agent's "serving" line on the console (TCG: ~1 min)
    boot_timeout_s: float = 240.0
    #: the emulated Azure CVM (its ``vendor/``): provision its AK and HCL report into the
    #: vTPM before boot and run its paravisor (``qemu_vtpm``); the cidata carries its VCEK.
    #: INSECURE emulation: the KBS accepts it only with ``insecure_emulated_roots``
    emulator_dir: Path | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_socket(sock: Path, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + _SWTPM_START_S
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise DependencyError(f"{what} did not start", reason="pod.qemu_vtpm")
        time.sleep(0.02)


def _cmdline(image_dir: Path) -> str:
    import json

    try:
        return str(json.loads((image_dir / "vm.json").read_text())["cmdline"])
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"{image_dir} is not a pod VM image: {exc}",
            reason="pod.qemu_image",
            fix="trustpod image build --bootable --out DIR",
        ) from exc


class QemuProvider:
    name = "qemu"

    def __init__(self, settings: QemuSettings) -> None:
        if shutil.which("qemu-system-x86_64") is None:
            raise DependencyError(
                "qemu-system-x86_64 not found", fix="apt-get install qemu-system-x86"
            )
        if settings.vtpm and shutil.which("swtpm") is None:
            raise DependencyError("swtpm not found", fix="apt-get install swtpm")
        self.settings = settings
        self.cmdline = _cmdline(settings.image_dir)
        self.accel = "kvm" if kvm_usable() else "tcg"
        self._procs: dict[str, list[subprocess.Popen[bytes]]] = {}
        make_private_dirs(settings.vm_root, parents=True, exist_ok=True)

    def _vm(self, instance_id: str) -> Path:
        if "/" in instance_id or instance_id.startswith("."):
            raise ConfigError(f"bad qemu instance id {instance_id!r}", reason="pod.instance")
        return self.settings.vm_root / instance_id

    def agent_listen_for(self, instance_id: str) -> str:
        del instance_id
        return f"unix:{AGENT_SOCKET}"

    def create_instance(
        self, pod_name: str, sandbox_id: str, userdata: str, spec: InstanceTypeSpec
    ) -> Instance:
        name = instance_name(pod_name, sandbox_id)
        vm = self._vm(name)
        make_private_dirs(vm, vm / "tpm")
        try:
            return self._boot(name, vm, userdata, spec)
        except BaseException:
            self.delete_instance(name)
            raise

    def _swtpm(self, vm: Path) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
        # relative to the VM directory (swtpm and qemu run there): a unix socket path must fit
        # in 108 bytes, and VM directories under pytest's tmp do not
        sock = vm / _TPM_SOCK
        argv = ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={vm / 'tpm'}"]
        argv += ["--ctrl", f"type=unixio,path={_TPM_SOCK}", "--flags", "startup-clear"]
        argv += ["--log", f"file={vm / 'tpm' / 'swtpm.log'}"]
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, cwd=vm,
        )  # fmt: skip
        procs = [proc]
        _wait_socket(sock, proc, "swtpm")
        path = _TPM_SOCK
        emu = self.settings.emulator_dir
        if emu is not None:  # the emulated CVM's paravisor between qemu and swtpm
            argv = [sys.executable, "-m", "trustpod.pod.providers.qemu_vtpm", "--vm", str(vm)]
            argv += ["--emulator-dir", str(emu), "--listen", _PARAVISOR_SOCK]
            log = (vm / "tpm" / "paravisor.log").open("wb")
            para = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, cwd=vm,
            )  # fmt: skip
            log.close()
            procs.append(para)
            _wait_socket(vm / _PARAVISOR_SOCK, para, "the vTPM paravisor")
            path = _PARAVISOR_SOCK
        extra = ["-chardev", f"socket,id=chrtpm,path={path}", "-tpmdev"]
        extra += ["emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-crb,tpmdev=tpm0"]
        return procs, extra

    def _boot(self, name: str, vm: Path, userdata: str, spec: InstanceTypeSpec) -> Instance:
        s = self.settings
        files: dict[str, bytes] = {}
        if s.vtpm and s.emulator_dir is not None:
            from trustpod.pod.providers.qemu_vtpm import provision

            files["vcek.der"] = provision(vm / "tpm", s.emulator_dir)
        write_cidata(vm / "cidata.iso", userdata.encode(), name, files)
        procs: list[subprocess.Popen[bytes]] = []
        self._procs[name] = procs
        extra: list[str] = []
        if s.vtpm:
            tpm, extra = self._swtpm(vm)
            procs += tpm
        host_port = _free_port()
        net = f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{host_port}-{GUEST_IP}:{APF_PORT}"
        for port in s.forward:  # cmd: runs once per guest connection (tcp: would be one)
            net += f",guestfwd=tcp:{GUEST_HOST_IP}:{port}-cmd:{_BUSYBOX} nc 127.0.0.1 {port}"
        extra += ["-netdev", net, "-device", "virtio-net-pci,netdev=n0"]
        extra += ["-drive", f"file={vm / 'cidata.iso'},if=virtio,format=raw,readonly=on"]
        cfg = QemuConfig(
            kernel=s.image_dir / "vmlinuz",
            initrd=s.image_dir / "initrd.img",
            disk=s.image_dir / "disk.raw",
            cmdline=self.cmdline,
            console=vm / "console.log",
            memory_mib=spec.memory_mib or s.memory_mib,
            smp=spec.vcpus or s.smp,
            accel=self.accel,
            extra=tuple(extra),
        )
        qemu = subprocess.Popen(
            qemu_argv(cfg),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(vm / "qemu.log").open("wb"),
            start_new_session=True,
            cwd=vm,
        )
        procs.append(qemu)
        (vm / "pids").write_text("".join(f"{p.pid}\n" for p in procs))
        self._wait_serving(name)
        return Instance(id=name, name=name, agent_address=f"tcp:127.0.0.1:{host_port}")

    def _wait_serving(self, name: str) -> None:
        """Until the agent prints its serving line: user-mode networking accepts the hostfwd
        connection before anything listens in the guest, so a connect proves nothing."""
        deadline = time.monotonic() + self.settings.boot_timeout_s
        console = self._vm(name) / "console.log"
        while True:
            text = console.read_text(errors="replace") if console.exists() else ""
            if SERVING_MARKER in text:
                return
            why = self.instance_error(name)
            if why is not None:
                raise DependencyError(why, reason="pod.vm_boot")
            if time.monotonic() > deadline:
                raise DependencyError(
                    f"the pod VM's agent did not serve in {self.settings.boot_timeout_s:.0f} s",
                    reason="pod.vm_boot",
                    fix=f"see {console}",
                )
            time.sleep(0.1)

    def console_path(self, instance_id: str) -> Path:
        """The console log file (``trustpod pod logs --console``)."""
        return self._vm(instance_id) / "console.log"

    def console(self, instance_id: str) -> str:
        try:
            return (self._vm(instance_id) / "console.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def instance_error(self, instance_id: str) -> str | None:
        """``None`` while the VM runs; else why it stopped (the dm-verity line if any)."""
        procs = self._procs.get(instance_id)
        if not procs or procs[-1].poll() is None:
            return None
        text = self.console(instance_id)
        for line in text.splitlines():
            if ("verity" in line and "corrupted" in line) or "BOOT STOPPED" in line:
                return f"pod VM boot stopped: {line.strip()}"
        return f"qemu exit {procs[-1].returncode}: {text[-1500:]}"

    def delete_instance(self, instance_id: str) -> None:
        vm = self._vm(instance_id)
        procs = self._procs.pop(instance_id, None)
        if procs is None:  # another process (``trustpod pod delete``) started it
            self._stop_by_pidfile(vm)
        for proc in reversed(procs or []):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.settings.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(vm, ignore_errors=True)

    def _stop_by_pidfile(self, vm: Path) -> None:
        """SIGTERM the qemu/swtpm PIDs recorded for ``vm``, only while their command line
        still names this VM's directory (a reused PID is left alone)."""
        try:
            pids = [int(p) for p in (vm / "pids").read_text().split()]
        except (OSError, ValueError):
            return
        for pid in reversed(pids):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(vm).encode() not in cmd:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.settings.stop_timeout_s
            while time.monotonic() < deadline:
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                except OSError:
                    break
                if stat.rpartition(")")[2].split()[:1] == ["Z"]:
                    break
                time.sleep(0.05)

    def teardown(self) -> None:
        for instance_id in list(self._procs):
            self.delete_instance(instance_id)


_KEYS = {
    "image_dir", "vm_root", "memory_mib", "smp", "vtpm", "forward", "boot_timeout_s",
    "emulator_dir",
}  # fmt: skip


def qemu_provider(raw: Mapping[str, Any], default_root: Path) -> QemuProvider:
    """``[qemu]`` of the pod config -> the provider. ``image_dir`` defaults to
    ``$TRUSTPOD_POD_VM_IMAGE``; build one with ``trustpod image build --bootable``."""
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(f"qemu.{sorted(unknown)[0]} is not a setting", reason="pod.config")
    image = raw.get("image_dir") or os.environ.get("TRUSTPOD_POD_VM_IMAGE")
    if not image:
        raise ConfigError(
            "the qemu provider needs qemu.image_dir (or $TRUSTPOD_POD_VM_IMAGE)",
            reason="pod.config",
            fix="trustpod image build --bootable --out DIR, then image_dir = DIR",
        )
    try:
        forward = tuple(int(p) for p in raw.get("forward", ()))
        return QemuProvider(
            QemuSettings(
                image_dir=Path(str(image)),
                vm_root=Path(str(raw.get("vm_root", default_root))),
                memory_mib=int(raw.get("memory_mib", 1024)),
                smp=int(raw.get("smp", 2)),
                vtpm=bool(raw.get("vtpm", True)),
                forward=forward,
                boot_timeout_s=float(raw.get("boot_timeout_s", 240.0)),
                emulator_dir=Path(str(raw["emulator_dir"])) if raw.get("emulator_dir") else None,
            )
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[qemu]: {exc}", reason="pod.config") from exc
