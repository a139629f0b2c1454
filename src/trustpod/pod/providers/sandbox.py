"""``sandbox``: the pod VM is a process tree in fresh namespaces on this machine.

The pattern of CAA's removed docker provider: the cloud-config is written to a file that the pod
VM sees as ``/media/cidata/user-data``. Here the "VM" is ``unshare --pid --mount --uts --ipc``
(its own PID 1, mount table, hostname and IPC) running ``trustpod.pod.guest_boot``, which
provisions the userdata and becomes ``trustpod agent serve``; its TEE is the emulated Azure CVM
(swtpm vTPM, emulated HCL report signed by an emulated AMD chain), so the KBS accepts its
evidence only with ``insecure_emulated_roots`` naming ``<emulator_dir>/vendor/roots.pem``.
NOT a VM: no memory isolation from this host, the network namespace is the host's (the pod VM
reaches the KBS on 127.0.0.1). Deleting the instance SIGTERMs the namespace's PID 1 (the agent
removes its containers and powers off the vTPM); the kernel kills whatever is left when PID 1
exits, the private mounts vanish with the namespace and the VM directory is removed.
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
from dataclasses import dataclass
from pathlib import Path

from trustpod._internal.private_dirs import make_private_dirs
from trustpod.errors import ConfigError, DependencyError
from trustpod.pod.guest_boot import VM_IP_ENV
from trustpod.pod.provider import Instance, InstanceTypeSpec, instance_name
from trustpod.pod.userdata import USERDATA_FILE

__all__ = ["SandboxProvider", "SandboxSettings", "build_pause_rootfs"]

_BUSYBOX = Path("/bin/busybox")
_APPLETS = ("sh", "echo", "cat", "sleep", "ls", "env", "true", "wget", "head", "tail", "kill")


@dataclass(frozen=True, slots=True)
class SandboxSettings:
    """``[sandbox]`` of the pod config."""

    vm_root: Path
    emulator_dir: Path
    attester: str = "emulated-az-snp-vtpm"
    local_images: Path | None = None
    stop_timeout_s: float = 15.0


def build_pause_rootfs(path: Path) -> Path:
    """The pod VM image's pause container: static busybox and ``/pause``."""
    if (path / "pause").exists():
        return path
    if not _BUSYBOX.exists():
        raise DependencyError(
            "no /bin/busybox for the pause container", fix="apt install busybox-static"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc"):
        (tmp / d).mkdir(parents=True)
    shutil.copy2(_BUSYBOX, tmp / "bin" / "busybox")
    for name in _APPLETS:
        (tmp / "bin" / name).symlink_to("busybox")
    (tmp / "pause").write_text("#!/bin/sh\nexec sleep 2147483647\n")
    (tmp / "pause").chmod(0o755)
    with contextlib.suppress(OSError):
        tmp.rename(path)
    shutil.rmtree(tmp, ignore_errors=True)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class SandboxProvider:
    name = "sandbox"

    def __init__(self, settings: SandboxSettings) -> None:
        if shutil.which("unshare") is None:
            raise DependencyError("unshare not found", fix="apt install util-linux")
        self.settings = settings
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        make_private_dirs(settings.vm_root, parents=True, exist_ok=True)

    def _vm(self, instance_id: str) -> Path:
        if "/" in instance_id or instance_id.startswith("."):
            raise ConfigError(f"bad sandbox instance id {instance_id!r}", reason="pod.instance")
        return self.settings.vm_root / instance_id

    def _guest_toml(self, vm: Path) -> str:
        s = self.settings
        lines = [
            f'attester = "{s.attester}"',
            f'key_dir = "{vm / "keys"}"',
            f'api_listen = "127.0.0.1:{_free_port()}"',
            "kbs_max_retries = 1",
        ]
        if s.attester.startswith("emulated-"):
            lines += [
                "[attester_settings]",
                f'emulator_dir = "{s.emulator_dir}"',
                'emulator_backend = "swtpm"',
                "report_refresh_delay_s = 0",
            ]
        return "\n".join(lines) + "\n"

    def create_instance(
        self, pod_name: str, sandbox_id: str, userdata: str, spec: InstanceTypeSpec
    ) -> Instance:
        del spec  # one size: the host
        return self.boot_instance(instance_name(pod_name, sandbox_id), userdata)

    def boot_instance(self, name: str, userdata: str, *, ip: str | None = None) -> Instance:
        """Boot a pod VM called ``name`` fed with ``userdata``; ``ip`` is the address its
        "NIC" has (the agent binds it when apf.json says ``tcp:0.0.0.0:PORT``)."""
        vm = self._vm(name)
        make_private_dirs(vm, *(vm / d for d in ("cidata", "root", "image", "keys", "tmp")))
        try:
            return self._boot(name, vm, userdata, ip)
        except BaseException:
            self.delete_instance(name)
            raise

    def _boot(self, name: str, vm: Path, userdata: str, ip: str | None) -> Instance:
        fd = os.open(vm / "cidata" / USERDATA_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(userdata)
        image = vm / "image"
        (image / "guest.toml").write_text(self._guest_toml(vm))
        pause = build_pause_rootfs(self.settings.vm_root / ".pause-rootfs")
        (image / "pause").mkdir()
        (image / "pause" / "rootfs").symlink_to(pause)
        if self.settings.local_images is not None:
            (image / "images").symlink_to(self.settings.local_images)
        script = (
            "set -e; mount -t tmpfs -o mode=0755,size=1m cidata-media /media; "
            'mkdir /media/cidata; mount --bind "$VM/cidata" /media/cidata; '
            'hostname "$NAME"; exec "$PY" -m trustpod.pod.guest_boot '
            '--root "$VM/root" --image "$VM/image"'
        )
        argv = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount"]
        argv += ["--uts", "--ipc", "--propagation", "private", "sh", "-c", script]
        env = {
            **os.environ,
            "VM": str(vm),
            "NAME": name,
            "PY": sys.executable,
            "TMPDIR": str(vm / "tmp"),
            "RUST_LIB_BACKTRACE": "0",
        }
        if ip is not None:
            env[VM_IP_ENV] = ip
        console = (vm / "console.log").open("wb")
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                env=env,
                start_new_session=True,
            )
        finally:
            console.close()
        self._children[name] = proc
        (vm / "pid").write_text(f"{proc.pid}\n")
        return Instance(id=name, name=name, agent_address=self.agent_listen_for(name))

    def agent_listen_for(self, instance_id: str) -> str:
        """Where the agent listens (apf.json): a unix socket in the VM directory."""
        return f"unix:{self._vm(instance_id) / 'agent.sock'}"

    def instance_error(self, instance_id: str) -> str | None:
        """``None`` while the pod VM runs; else why it stopped (its console's tail)."""
        proc = self._children.get(instance_id)
        if proc is None or proc.poll() is None:
            return None
        return f"exit {proc.returncode}: {self.console(instance_id)[-1500:]}"

    def console_path(self, instance_id: str) -> Path:
        """The console log file (``trustpod pod logs --console``)."""
        return self._vm(instance_id) / "console.log"

    def console(self, instance_id: str) -> str:
        try:
            return (self._vm(instance_id) / "console.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def delete_instance(self, instance_id: str) -> None:
        vm = self._vm(instance_id)
        try:
            pid = int((vm / "pid").read_text())
        except (OSError, ValueError):
            pid = 0
        if (
            pid
            and _alive(pid)
            and str(vm) in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        ):
            self._stop(instance_id, pid)
        self._children.pop(instance_id, None)
        shutil.rmtree(vm, ignore_errors=True)

    def _stop(self, instance_id: str, pid: int) -> None:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        for child in children:  # the namespace's PID 1: the agent
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGTERM)
        deadline = time.monotonic() + self.settings.stop_timeout_s
        proc = self._children.get(instance_id)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                return
            if proc is None and not _alive(pid):
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # --kill-child: the namespace goes with it
        if proc is not None:
            proc.wait(5)

    def teardown(self) -> None:
        for name in list(self._children):
            self.delete_instance(name)
