"""The pod's containers and processes (kata's ``Sandbox``), independent of ttRPC.

A container's life, as the kata agent runs it:

1. CreateContainer: rootfs from the ``ImagePuller`` (the pause container from the pod VM
   image's local rootfs), sealed env values and secret-volume files unsealed through the CDH
   (a failure refuses the container, naming the secret), spec rewritten by ``oci.guest_spec``
   (with ``sandbox_pidns``: the sandbox's PID namespace, ``trustpod.agent.pidns``),
   ``runc create`` with fresh stdio pipes, or a pty when the process has ``terminal``
   (``trustpod.agent.console``);
2. StartContainer: ``runc start``;
3. ExecProcess: ``runc exec --detach`` with the request's process (pipes or a pty, the same);
4. WaitProcess: the exit status; an exec process is forgotten afterwards (kata removes it);
5. RemoveContainer: SIGKILL to all its processes, wait (``timeout`` seconds, 0 = the named
   maximum), ``runc delete --force``, the bundle is removed.

An empty ``exec_id`` names the container's init process, as in kata.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trustpod.agent.console import launch
from trustpod.agent.images import ImagePuller
from trustpod.agent.oci import SHARED_CONTAINERS_DIR, guest_path, guest_spec
from trustpod.agent.pidns import SandboxPidNamespace
from trustpod.agent.process import Process, signal_handled
from trustpod.agent.runc import ContainerRuntime, Stdio
from trustpod.errors import ConfigError, EvidenceError, NotFoundError, TrustpodError

__all__ = [
    "LOCAL_STORAGE_DRIVERS",
    "SANDBOX_CONTAINER_ANNOTATIONS",
    "AgentSettings",
    "Container",
    "Sandbox",
    "SecretUnsealer",
]

log = logging.getLogger(__name__)

#: Annotations that mark the pod's sandbox (pause) container (containerd, CRI-O).
SANDBOX_CONTAINER_ANNOTATIONS = (
    ("io.kubernetes.cri.container-type", "sandbox"),
    ("io.kubernetes.cri-o.ContainerType", "sandbox"),
)
IMAGE_NAME_ANNOTATIONS = ("io.kubernetes.cri.image-name", "io.kubernetes.cri-o.ImageName")
GUEST_PULL_DRIVER = "image_guest_pull"
#: Storage drivers that are an empty directory at ``mount_point`` (emptyDir volumes).
LOCAL_STORAGE_DRIVERS = ("ephemeral", "local")
#: Secret-volume unsealing skips these kata-managed files (kata PR #10674).
_NOT_SECRET_SUFFIXES = ("resolv.conf", "termination-log", "hostname", "hosts", "serviceaccount")


class SecretUnsealer(Protocol):
    """The CDH calls the agent needs (``trustpod.guest.cdh.ConfidentialDataHub``)."""

    def unseal_env(self, env: Mapping[str, str]) -> dict[str, str]: ...
    def unseal_volume(self, directory: Path) -> list[Path]: ...


@dataclass(frozen=True, slots=True)
class AgentSettings:
    #: Containers per pod.
    max_containers: int = 64
    #: Processes (init + exec) per container.
    max_processes: int = 64
    #: Largest ReadStdout/ReadStderr answer (kata reads ``len`` bytes; capped below ttRPC's 4 MiB).
    max_read_bytes: int = 1 << 20
    #: RemoveContainer waits at most this long (also when the request says 0 = forever).
    max_remove_wait_s: float = 60.0
    #: Largest file CopyFile writes.
    max_copy_file_bytes: int = 64 << 20
    #: How often the containers' memory cgroups are checked for OOM kills (GetOOMEvent).
    oom_poll_s: float = 1.0
    #: cgroup v1 memory hierarchy (the containers' cgroupsPath is /trustpod/<id>).
    memory_cgroup_root: str = "/sys/fs/cgroup/memory"
    #: How long runc has to deliver a terminal process's pty over the console socket.
    console_timeout_s: float = 5.0


@dataclass
class Container:
    id: str
    bundle: Path
    init: Process
    processes: dict[str, Process] = field(default_factory=dict)
    started: bool = False
    exec_count: int = 0


def _env_map(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        name, _, value = item.partition("=")
        out[name] = value
    return out


def _is_sandbox_container(annotations: Mapping[str, str]) -> bool:
    return any(annotations.get(k) == v for k, v in SANDBOX_CONTAINER_ANNOTATIONS)


class Sandbox:
    def __init__(
        self,
        runtime: ContainerRuntime,
        puller: ImagePuller,
        *,
        state_dir: Path,
        run_dir: Path,
        pause_rootfs: Path | None = None,
        unsealer: SecretUnsealer | None = None,
        settings: AgentSettings | None = None,
    ) -> None:
        self.runtime = runtime
        self.puller = puller
        self.state_dir = state_dir
        self.run_dir = run_dir
        self.pause_rootfs = pause_rootfs
        self.unsealer = unsealer
        self.settings = settings or AgentSettings()
        self.lock = threading.RLock()
        self.containers: dict[str, Container] = {}
        self.sandbox_id = ""
        self.hostname = ""
        self.dns: list[str] = []
        self._oom: list[str] = []
        self._oom_cv = threading.Condition()
        self.closed = False
        self.pidns = SandboxPidNamespace()
        (state_dir / "bundles").mkdir(parents=True, exist_ok=True, mode=0o700)
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._oom_seen: dict[str, int] = {}
        self._oom_thread = threading.Thread(target=self._watch_oom, name="oom", daemon=True)
        self._oom_thread.start()

    # -- lookups (kata's find_container_process) --
    def container(self, cid: str) -> Container:
        with self.lock:
            ctr = self.containers.get(cid)
        if ctr is None:
            raise NotFoundError(f"Invalid container id {cid!r}", reason="agent.container")
        return ctr

    def process(self, cid: str, eid: str) -> Process:
        ctr = self.container(cid)
        if not eid or eid == ctr.init.exec_id:
            return ctr.init
        with self.lock:
            proc = ctr.processes.get(eid)
        if proc is None:
            raise NotFoundError(
                f"Process not found: invalid exec id {eid!r}", reason="agent.exec_id"
            )
        return proc

    # -- step 1 --
    def _rootfs(self, cid: str, spec: Mapping[str, Any], storages: list[Any], dest: Path) -> Path:
        annotations = spec.get("annotations", {})
        if _is_sandbox_container(annotations):
            if self.pause_rootfs is None or not self.pause_rootfs.is_dir():
                raise ConfigError(
                    "the pod VM image has no pause container rootfs",
                    reason="agent.no_pause",
                    fix="put the pause rootfs in <config-dir>/pause/rootfs",
                )
            rootfs = dest / "rootfs"
            shutil.copytree(self.pause_rootfs, rootfs, symlinks=True)
            return rootfs
        refs = [s.source for s in storages if s.driver == GUEST_PULL_DRIVER]
        refs += [annotations[k] for k in IMAGE_NAME_ANNOTATIONS if annotations.get(k)]
        if not refs:
            raise EvidenceError(
                f"container {cid}: no image to pull in the guest (no {GUEST_PULL_DRIVER} "
                "storage or image-name annotation); host-shared root filesystems are not used "
                "in a confidential pod",
                reason="agent.no_image",
            )
        return self.puller.pull(refs[0], dest)

    def _bind_source(self, source: str) -> str:
        """A bind mount's source mapped into the run dir, refused when it resolves outside
        (a symlink made by CopyFile must not lead runc to the agent's own filesystem)."""
        mapped = guest_path(source, str(self.run_dir))
        real = os.path.realpath(mapped)
        base = os.path.realpath(self.run_dir)
        if real != base and not real.startswith(base + os.sep):
            raise EvidenceError(
                f"bind mount source {source!r} resolves outside the pod's shared directory",
                reason="agent.bind_escape",
            )
        return real

    def _local_storages(self, storages: list[Any]) -> None:
        """kata's ``ephemeral`` (tmpfs) and ``local`` storage drivers back emptyDir volumes at
        ``mount_point`` (under /run/kata-containers): here a directory, mode 0777 like
        emptyDir, in the agent's run dir. Other drivers are only the image pull's."""
        for storage in storages:
            if storage.driver not in LOCAL_STORAGE_DRIVERS:
                continue
            target = Path(guest_path(storage.mount_point, str(self.run_dir)))
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o777)  # emptyDir semantics, whatever the umask

    def _unseal(self, cid: str, spec: dict[str, Any]) -> None:
        process = spec.get("process", {})
        env = process.get("env", [])
        if any(item.partition("=")[2].startswith("sealed.") for item in env):
            if self.unsealer is None:
                raise ConfigError(
                    f"container {cid} has a sealed env value but the agent has no CDH",
                    reason="agent.no_cdh",
                )
            unsealed = self.unsealer.unseal_env(_env_map(env))
            process["env"] = [f"{k}={v}" for k, v in unsealed.items()]
        shared = os.path.realpath(self.run_dir / "shared" / "containers") + os.sep
        for mount in spec.get("mounts", []):
            src = str(mount.get("source", ""))  # bind sources are resolved (_bind_source)
            if not src.startswith(shared):
                continue
            if src.endswith(_NOT_SECRET_SUFFIXES) or not os.path.isdir(src):
                continue
            if self.unsealer is None:
                continue
            self.unsealer.unseal_volume(Path(src))

    def create_container(
        self,
        cid: str,
        exec_id: str,
        config: dict[str, Any],
        storages: list[Any],
        *,
        sandbox_pidns: bool = False,
    ) -> None:
        if not cid or "/" in cid or cid.startswith("."):
            raise EvidenceError(f"bad container id {cid!r}", reason="agent.container_id")
        with self.lock:
            if cid in self.containers:
                raise EvidenceError(f"container {cid} exists", reason="agent.container_exists")
            if len(self.containers) >= self.settings.max_containers:
                raise ConfigError("too many containers", reason="agent.max_containers")
            count = len(self.containers)
        bundle = self.state_dir / "bundles" / cid
        bundle.mkdir(mode=0o700)
        try:
            with self.pidns.join_path(sandbox_pidns, containers=count) as pid_namespace:
                self._local_storages(storages)
                rootfs = self._rootfs(cid, config, storages, bundle)
                spec = guest_spec(
                    config,
                    container_id=cid,
                    rootfs=str(rootfs),
                    run_dir=str(self.run_dir),
                    map_source=self._bind_source,
                    pid_namespace=pid_namespace,
                )
                self._unseal(cid, spec)
                fd = os.open(bundle / "config.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    json.dump(spec, fh)

                def run(stdio: Stdio, console: str) -> int:
                    return self.runtime.create(cid, bundle, stdio, console_socket=console)

                pid, ends = launch(
                    run,
                    tty=bool(spec["process"].get("terminal")),
                    socket_dir=self.state_dir,
                    timeout_s=self.settings.console_timeout_s,
                    undo=lambda _pid: self._delete_quietly(cid),
                )
        except BaseException:
            shutil.rmtree(bundle, ignore_errors=True)
            raise
        init = Process(exec_id or cid, pid, ends, init=True)
        with self.lock:
            self.pidns.record(cid, pid, containers=len(self.containers))
            self.containers[cid] = Container(cid, bundle, init)
        log.info("container %s created (pid %d, tty %s)", cid, pid, init.tty)

    def _delete_quietly(self, cid: str) -> None:
        with contextlib.suppress(TrustpodError):
            self.runtime.delete(cid)

    # -- steps 2-4 --
    def start_container(self, cid: str) -> None:
        ctr = self.container(cid)
        if ctr.started:
            raise EvidenceError(f"container {cid} already started", reason="agent.started")
        self.runtime.start(cid)
        ctr.started = True

    def exec_process(self, cid: str, eid: str, process: dict[str, Any]) -> None:
        ctr = self.container(cid)
        if not eid:
            raise EvidenceError("exec_id must not be empty", reason="agent.exec_id")
        process.setdefault("cwd", "/")
        process.setdefault("user", {"uid": 0, "gid": 0})
        with self.lock:
            if eid in ctr.processes or eid == ctr.init.exec_id:
                raise EvidenceError(f"exec id {eid} exists", reason="agent.exec_exists")
            if len(ctr.processes) + 1 >= self.settings.max_processes:
                raise ConfigError("too many processes", reason="agent.max_processes")
            ctr.exec_count += 1
            tag = f"exec{ctr.exec_count}"

        def run(stdio: Stdio, console: str) -> int:
            return self.runtime.exec(cid, process, stdio, tag, console_socket=console)

        pid, ends = launch(
            run,
            tty=bool(process.get("terminal")),
            socket_dir=self.state_dir,
            timeout_s=self.settings.console_timeout_s,
        )
        with self.lock:
            ctr.processes[eid] = Process(eid, pid, ends, init=False)

    def wait_process(self, cid: str, eid: str) -> int:
        proc = self.process(cid, eid)
        proc.wait()
        if not proc.init:
            ctr = self.container(cid)
            with self.lock:
                ctr.processes.pop(proc.exec_id, None)
            proc.close()
        return proc.status

    def signal_process(self, cid: str, eid: str, sig: int) -> None:
        ctr = self.container(cid)
        if not eid and sig == signal.SIGKILL:
            # kata: empty exec id + SIGKILL = every process of the container
            with self.lock:
                procs = [ctr.init, *ctr.processes.values()]
            for p in procs:
                p.signal(sig)
            return
        proc = self.process(cid, eid)
        if proc.init and sig == signal.SIGTERM and not signal_handled(proc.pid, sig):
            sig = signal.SIGKILL  # kata: an init that ignores SIGTERM gets SIGKILL
        proc.signal(sig)

    # -- step 5 --
    def remove_container(self, cid: str, timeout_s: float = 0) -> None:
        ctr = self.container(cid)
        wait = self.settings.max_remove_wait_s
        if timeout_s > 0:
            wait = min(wait, timeout_s)
        with self.lock:
            procs = [ctr.init, *ctr.processes.values()]
        for p in procs:
            p.signal(signal.SIGKILL)
        if not all(p.wait(wait) for p in procs):
            raise TrustpodError(
                f"container {cid}: processes still running after {wait}s",
                reason="agent.remove_timeout",
            )
        self.runtime.delete(cid)
        for p in procs:
            p.close()
        with self.lock:
            self.containers.pop(cid, None)
        self.pidns.removed(cid)
        shutil.rmtree(ctr.bundle, ignore_errors=True)
        log.info("container %s removed", cid)

    def stats(self, cid: str) -> dict[str, Any]:
        self.container(cid)
        return self.runtime.stats(cid)

    # -- OOM events (kata's GetOOMEvent: blocks until one arrives or the agent stops) --
    def report_oom(self, cid: str) -> None:
        with self._oom_cv:
            self._oom.append(cid)
            self._oom_cv.notify_all()

    def _oom_kills(self, cid: str) -> int:
        path = Path(self.settings.memory_cgroup_root, "trustpod", cid, "memory.oom_control")
        try:
            for line in path.read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    def _watch_oom(self) -> None:
        """kata watches each container's memory cgroup for OOM events; here the cgroup v1
        ``oom_kill`` counter is polled every ``oom_poll_s``."""
        while True:
            with self._oom_cv:
                if self._oom_cv.wait_for(lambda: self.closed, self.settings.oom_poll_s):
                    return
            with self.lock:
                ids = list(self.containers)
            for cid in ids:
                kills = self._oom_kills(cid)
                if kills > self._oom_seen.get(cid, 0):
                    log.warning("container %s: OOM kill", cid)
                    self.report_oom(cid)
                self._oom_seen[cid] = kills

    def next_oom(self) -> str | None:
        with self._oom_cv:
            while not self._oom and not self.closed:
                self._oom_cv.wait()
            return self._oom.pop(0) if self._oom else None

    def shared_path(self, path: str) -> Path:
        """A CopyFile destination: must be under kata's shared containers directory."""
        if not path.startswith(SHARED_CONTAINERS_DIR + "/"):
            raise EvidenceError(
                f"CopyFile path {path!r} is not under {SHARED_CONTAINERS_DIR}",
                reason="agent.copy_path",
            )
        return Path(guest_path(path, str(self.run_dir)))

    def destroy(self) -> None:
        with self.lock:
            ids = list(self.containers)
        for cid in ids:
            with contextlib.suppress(TrustpodError):
                self.remove_container(cid)
        self.close()

    def close(self) -> None:
        with self._oom_cv:
            self.closed = True
            self._oom_cv.notify_all()
        self.pidns.close()
