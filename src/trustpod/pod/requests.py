"""The kata agent requests for a pod, shaped as containerd + the kata shim send them (pure).

Per container (``kata: src/runtime/virtcontainers/kata_agent.go``): a ``CreateContainerRequest``
whose OCI spec carries the CRI annotations (container type, sandbox name/namespace/id, container
name, image name), the guest-pull storage (``image_guest_pull``, source = image reference, as
the shim sends it when ``shared_fs = none``), emptyDir as kata ``local`` storage under
``/run/kata-containers/sandbox/local/<volume>``, secret/configMap volumes as files the shim
copied in with ``CopyFile`` under ``/run/kata-containers/shared/containers/<cid>-<volume>``, and
the default mounts. The sandbox (pause) container runs ``/pause`` from the pod VM image.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from trustpod.pod.spec import ContainerSpec, PodSpec, Volume

__all__ = [
    "DEFAULT_PATH",
    "LOCAL_STORAGE_DIR",
    "PAUSE_ID_NAME",
    "PAUSE_UID",
    "POD_NETNS",
    "ROOTFS_DIR",
    "SHARED_DIR",
    "CopyFileOp",
    "container_id",
    "copy_file_ops",
    "create_container",
    "create_sandbox",
    "exec_request",
]

SHARED_DIR = "/run/kata-containers/shared/containers"
POD_NETNS = "/run/netns/podns"
ROOTFS_DIR = "/run/kata-containers"
LOCAL_STORAGE_DIR = "/run/kata-containers/sandbox/local"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The pause container's user (containerd's default, genpolicy's expectation).
PAUSE_UID = 65535
#: Name used to derive the sandbox (pause) container's id.
PAUSE_ID_NAME = "pause"
_DEFAULT_MOUNTS = (
    ("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
    ("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
    ("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", "ro")),
    (
        "/dev/pts",
        "devpts",
        "devpts",
        ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"),
    ),
)


@dataclass(frozen=True, slots=True)
class CopyFileOp:
    """One CopyFile call: a directory (``data is None``) or a whole file."""

    path: str
    mode: int
    data: bytes | None


def container_id(sandbox_id: str, name: str) -> str:
    """64 hex characters, like containerd's ids (derived: stable for a sandbox + name)."""
    if name == PAUSE_ID_NAME:
        return sandbox_id
    return hashlib.sha256(f"{sandbox_id}/{name}".encode()).hexdigest()


def _volume_dir(cid: str, volume: str) -> str:
    """kata's ``<cid>-<16 hex>-<volume>`` name for a file shared with CopyFile."""
    tag = hashlib.sha256(f"{cid}/{volume}".encode()).hexdigest()[:16]
    return f"{SHARED_DIR}/{cid}-{tag}-{volume}"


def copy_file_ops(pod: PodSpec, sandbox_id: str, c: ContainerSpec) -> list[CopyFileOp]:
    """The CopyFile calls that put this container's secret/configMap volumes in the guest."""
    volumes = {v.name: v for v in pod.volumes}
    cid = container_id(sandbox_id, c.name)
    ops: list[CopyFileOp] = []
    for m in c.mounts:
        v = volumes[m.name]
        if v.kind == "emptyDir":
            continue
        base = _volume_dir(cid, v.name)
        ops.append(CopyFileOp(base, 0o040755, None))
        ops.extend(CopyFileOp(f"{base}/{name}", 0o100644, data) for name, data in v.files)
    return ops


def _annotations(pod: PodSpec, sandbox_id: str, ctype: str, name: str | None) -> dict[str, str]:
    out = {
        "io.kubernetes.cri.container-type": ctype,
        "io.kubernetes.cri.sandbox-name": pod.name,
        "io.kubernetes.cri.sandbox-namespace": pod.namespace,
        "io.kubernetes.cri.sandbox-id": sandbox_id,
    }
    if name:
        out["io.kubernetes.cri.container-name"] = name
    return out


def _base(pb: Any, cid: str, annotations: dict[str, str]) -> Any:
    req = pb.grpc.CreateContainerRequest(container_id=cid, exec_id=cid)
    spec = req.OCI
    spec.Version = "1.1.0"
    spec.Root.Path = f"{ROOTFS_DIR}/{cid}/rootfs"
    for dest, src, typ, opts in _DEFAULT_MOUNTS:
        m = spec.Mounts.add(destination=dest, source=src, type=typ)
        m.options.extend(opts)
    for ns in ("ipc", "uts", "mount"):  # no pid entry: the agent gives each container one
        spec.Linux.Namespaces.add(Type=ns, Path="")
    spec.Linux.Resources.Devices.add(Allow=False, Access="rwm")
    spec.Linux.MaskedPaths.extend(["/proc/kcore", "/sys/firmware"])
    spec.Linux.ReadonlyPaths.extend(["/proc/sys", "/proc/sysrq-trigger"])
    for k, v in annotations.items():
        spec.Annotations[k] = v
    return req


def create_sandbox(pb: Any, pod: PodSpec, sandbox_id: str) -> Any:
    """CreateSandbox. ``sandbox_pidns`` is false, as kata's shim always sends it
    (``SandboxConfig.SharePidNs`` is never set from a pod) and as genpolicy's CreateSandbox rule
    requires; the per-container flag is what shares the namespace."""
    return pb.grpc.CreateSandboxRequest(
        sandbox_id=sandbox_id, hostname=pod.name, sandbox_pidns=False
    )


def create_container(pb: Any, pod: PodSpec, sandbox_id: str, c: ContainerSpec | None) -> Any:
    """The CreateContainerRequest for container ``c`` (``None``: the pause container)."""
    if c is None:
        req = _base(pb, sandbox_id, _annotations(pod, sandbox_id, "sandbox", None))
        req.OCI.Process.Args.append("/pause")
        req.OCI.Process.Env.append(DEFAULT_PATH)
        req.OCI.Process.Cwd = "/"
        req.OCI.Process.NoNewPrivileges = True
        req.OCI.Process.User.UID = PAUSE_UID
        req.OCI.Process.User.GID = PAUSE_UID
        req.OCI.Root.Readonly = True
        req.OCI.Hostname = pod.name
        # the pod's network namespace (CAA's forwarder sets /run/netns/podns); the agent keeps
        # containers in its own, which is the pod VM's
        req.OCI.Linux.Namespaces.add(Type="network", Path=POD_NETNS)
        return req
    cid = container_id(sandbox_id, c.name)
    req = _base(pb, cid, _annotations(pod, sandbox_id, "container", c.name))
    # kata's shim: containerd gives the container the pause's PID namespace path, the shim
    # drops that entry and asks the agent for the sandbox's namespace instead
    req.sandbox_pidns = pod.share_process_namespace
    spec = req.OCI
    spec.Annotations["io.kubernetes.cri.image-name"] = c.image
    spec.Hostname = pod.name
    spec.Root.Readonly = c.read_only_root
    proc = spec.Process
    proc.Args.extend([*c.command, *c.args])
    proc.Env.extend([DEFAULT_PATH, f"HOSTNAME={pod.name}", *(f"{e.name}={e.value}" for e in c.env)])
    proc.Cwd = c.working_dir
    proc.NoNewPrivileges = c.no_new_privileges
    proc.User.UID = c.run_as_user or 0
    proc.User.GID = c.run_as_group if c.run_as_group is not None else (c.run_as_user or 0)
    volumes: dict[str, Volume] = {v.name: v for v in pod.volumes}
    for m in c.mounts:
        v = volumes[m.name]
        if v.kind == "emptyDir":
            src = f"{LOCAL_STORAGE_DIR}/{v.name}"
            req.storages.add(driver="local", source="local", mount_point=src, fstype="local")
        else:
            src = _volume_dir(cid, v.name)
        mount = spec.Mounts.add(destination=m.path, source=src, type="bind")
        mount.options.extend(["rbind", "rprivate", "ro" if m.read_only else "rw"])
    req.storages.add(
        driver="image_guest_pull", source=c.image, mount_point=spec.Root.Path, fstype="overlay"
    )
    return req


def exec_request(pb: Any, cid: str, exec_id: str, argv: list[str]) -> Any:
    req = pb.grpc.ExecProcessRequest(container_id=cid, exec_id=exec_id)
    req.process.Args.extend(argv)
    req.process.Env.append(DEFAULT_PATH)
    req.process.Cwd = "/"
    return req
