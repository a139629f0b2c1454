"""The container side without runc: spec conversion, guest rewrite, CopyFile, sandbox rules."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agent_support import container_request
from trustpod.agent.copyfile import copy_file
from trustpod.agent.images import LocalDirPuller, local_name
from trustpod.agent.oci import guest_path, guest_spec, json_name, to_runtime_json
from trustpod.agent.pb import protos
from trustpod.agent.runc import Stdio, exit_code
from trustpod.agent.sandbox import Sandbox
from trustpod.errors import ConfigError, EvidenceError, NotFoundError, PolicyDenied

PB = protos()


def test_spec_to_runtime_json_names_and_omitempty() -> None:
    req = container_request(PB, "c1", ["sh", "-c", "true"], env=["A=1"])
    spec = req.OCI
    spec.Process.OOMScoreAdj = -997
    spec.Process.User.UID = 1000
    spec.Linux.UIDMappings.add(HostID=1, ContainerID=0, Size=1)
    spec.Linux.Resources.Memory.Limit = 1 << 30
    spec.Linux.Resources.HugepageLimits.add(Pagesize="2MB", Limit=0)
    spec.Linux.Seccomp.Syscalls.add(Names=["mkdir"], Action="SCMP_ACT_ERRNO", errnoret=1)
    out = to_runtime_json(spec)
    assert out["ociVersion"] == "1.1.0"
    assert out["process"]["oomScoreAdj"] == -997
    assert out["process"]["user"] == {"uid": 1000}  # GID 0 is omitted like omitempty
    assert out["linux"]["uidMappings"] == [{"hostID": 1, "size": 1}]
    assert out["linux"]["resources"]["memory"] == {"limit": 1 << 30}
    assert out["linux"]["resources"]["hugepageLimits"] == [{"pageSize": "2MB"}]
    assert out["linux"]["seccomp"]["syscalls"][0]["errnoRet"] == 1
    assert out["annotations"]["io.kubernetes.cri.image-name"].endswith("busybox:1")
    assert [json_name(n) for n in ("CgroupsPath", "BlockIO", "ClassID", "KernelTCP")] == [
        "cgroupsPath",
        "blockIO",
        "classID",
        "kernelTCP",
    ]


def test_guest_spec_rewrites_host_parts() -> None:
    req = container_request(PB, "c1", ["true"])
    req.OCI.Hooks.Prestart.add(Path="/host/evil")
    req.OCI.Mounts.add(
        destination="/etc/resolv.conf",
        source="/run/kata-containers/shared/containers/c1-resolv.conf",
        type="bind",
        options=["rbind", "ro"],
    )
    out = guest_spec(
        to_runtime_json(req.OCI), container_id="c1", rootfs="/r/rootfs", run_dir="/state/run"
    )
    assert out["root"] == {"path": "/r/rootfs", "readonly": False}
    types = [ns["type"] for ns in out["linux"]["namespaces"]]
    assert "network" not in types and set(types) == {"pid", "ipc", "uts", "mount"}
    assert all("path" not in ns for ns in out["linux"]["namespaces"])
    assert "hooks" not in out
    assert out["linux"]["cgroupsPath"] == "/trustpod/c1"
    assert out["mounts"][-1]["source"] == "/state/run/shared/containers/c1-resolv.conf"
    for bad in ("/etc", "/run/kata-containers/../../etc", "relative", "/run/kata-containersX/a"):
        with pytest.raises(EvidenceError):
            guest_path(bad, "/state/run")
    assert out["linux"]["namespaces"][-1] == {"type": "pid"}  # a new PID namespace
    tty = to_runtime_json(req.OCI)
    tty["process"]["terminal"] = True  # kept: the agent gives the process a pty
    shared = guest_spec(
        tty, container_id="c1", rootfs="/r", run_dir="/s", pid_namespace="/proc/7/fd/3"
    )
    assert shared["process"]["terminal"] is True
    pid_entries = [ns for ns in shared["linux"]["namespaces"] if ns["type"] == "pid"]
    assert pid_entries == [{"type": "pid", "path": "/proc/7/fd/3"}]


def _copy(**kw: Any) -> Any:
    return PB.grpc.CopyFileRequest(**kw)


def test_copy_file_chunks_modes_symlinks_and_escapes(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    data = b"0123456789"
    copy_file(root, "d/f.txt", _copy(file_size=10, file_mode=0o100640, data=data[:4]), max_bytes=99)
    assert not (root / "d" / "f.txt").exists() and (root / "d" / "f.tmp").exists()
    copy_file(
        root,
        "d/f.txt",
        _copy(file_size=10, file_mode=0o100640, offset=4, data=data[4:]),
        max_bytes=99,
    )
    assert (root / "d" / "f.txt").read_bytes() == data
    assert stat.S_IMODE((root / "d" / "f.txt").stat().st_mode) == 0o640
    copy_file(root, "sub", _copy(file_mode=0o040700), max_bytes=99)
    assert (root / "sub").is_dir()
    copy_file(root, "link", _copy(file_mode=0o120777, data=b"/etc"), max_bytes=99)
    assert os.readlink(root / "link") == "/etc"
    with pytest.raises(OSError):  # never followed: the symlink is not a directory here
        copy_file(
            root, "link/passwd", _copy(file_size=1, file_mode=0o100644, data=b"x"), max_bytes=99
        )
    assert os.readlink(root / "link") == "/etc"
    with pytest.raises(EvidenceError):
        copy_file(root, "a/../b", _copy(file_size=1, data=b"x"), max_bytes=99)
    with pytest.raises(EvidenceError):
        copy_file(root, "big", _copy(file_size=100, data=b"x"), max_bytes=99)
    with pytest.raises(EvidenceError):
        copy_file(root, "past", _copy(file_size=2, offset=1, data=b"xyz"), max_bytes=99)


def test_exit_codes_as_kata_reports_them() -> None:
    assert exit_code(3 << 8) == 3
    assert exit_code(signal.SIGKILL) == 137
    assert exit_code(signal.SIGTERM) == 143


class FakeRuntime:
    def __init__(self) -> None:
        self.created: list[tuple[str, dict[str, Any]]] = []

    def create(
        self, container_id: str, bundle: Path, stdio: Stdio, *, console_socket: str = ""
    ) -> int:
        import json

        self.created.append((container_id, json.loads((bundle / "config.json").read_text())))
        raise ConfigError("fake runtime stops here", reason="test.stop")

    def start(self, container_id: str) -> None: ...
    def exec(
        self,
        container_id: str,
        process: dict[str, Any],
        stdio: Stdio,
        tag: str,
        *,
        console_socket: str = "",
    ) -> int:
        return 0

    def delete(self, container_id: str) -> None: ...
    def stats(self, container_id: str) -> dict[str, Any]:
        return {}


class FakeUnsealer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.volumes: list[Path] = []

    def unseal_env(self, env: Mapping[str, str]) -> dict[str, str]:
        if self.fail:
            raise PolicyDenied("cannot unseal env API_KEY: KBS refused")
        return {k: ("plain" if v.startswith("sealed.") else v) for k, v in env.items()}

    def unseal_volume(self, directory: Path) -> list[Path]:
        self.volumes.append(directory)
        return []


class RefusingPuller:
    def pull(self, image_ref: str, dest: Path) -> Path:
        raise PolicyDenied(f"image {image_ref} refused by policy scope docker: reject")


def _sandbox(tmp: Path, runtime: Any, puller: Any, unsealer: Any = None) -> Sandbox:
    return Sandbox(runtime, puller, state_dir=tmp / "state", run_dir=tmp / "run", unsealer=unsealer)


def test_sandbox_create_rules(tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / local_name("registry.local/test/busybox:1") / "bin").mkdir(parents=True)
    rt = FakeRuntime()
    sb = _sandbox(tmp_path, rt, LocalDirPuller(images), FakeUnsealer())
    try:
        req = container_request(PB, "c1", ["true"], env=["K=sealed.abc", "P=1"])
        with pytest.raises(ConfigError, match="fake runtime"):
            sb.create_container("c1", "c1", to_runtime_json(req.OCI), list(req.storages))
        cid, spec = rt.created[0]
        assert cid == "c1" and spec["process"]["env"] == ["PATH=/bin", "K=plain", "P=1"]
        assert not (tmp_path / "state" / "bundles" / "c1").exists()  # cleaned up on failure
        with pytest.raises(NotFoundError):
            sb.container("c1")
        with pytest.raises(EvidenceError):
            sb.create_container("../x", "", {}, [])
        # no image to pull (a host-shared rootfs) is refused
        bare = container_request(PB, "c2", ["true"], sandbox=True)
        with pytest.raises(ConfigError, match="pause"):
            sb.create_container("c2", "", to_runtime_json(bare.OCI), [])
        del bare.OCI.Annotations["io.kubernetes.cri.container-type"]
        with pytest.raises(EvidenceError, match="no image"):
            sb.create_container("c2", "", to_runtime_json(bare.OCI), [])
    finally:
        sb.close()


def test_sandbox_refusals_stop_before_runc(tmp_path: Path) -> None:
    rt = FakeRuntime()
    sb = _sandbox(tmp_path, rt, RefusingPuller(), FakeUnsealer(fail=True))
    try:
        req = container_request(PB, "c1", ["true"])
        with pytest.raises(PolicyDenied, match="refused by policy"):
            sb.create_container("c1", "", to_runtime_json(req.OCI), list(req.storages))
        sb.puller = LocalDirPuller(tmp_path)
        (tmp_path / local_name("registry.local/test/busybox:1")).mkdir()
        req = container_request(PB, "c1", ["true"], env=["API_KEY=sealed.x"])
        with pytest.raises(PolicyDenied, match="API_KEY"):
            sb.create_container("c1", "", to_runtime_json(req.OCI), list(req.storages))
        assert rt.created == []
        sb.unsealer = None
        with pytest.raises(ConfigError, match="no CDH"):
            sb.create_container("c1", "", to_runtime_json(req.OCI), list(req.storages))
    finally:
        sb.close()
    assert sb.next_oom() is None  # closed: GetOOMEvent returns


def _spawn(pipes: Any, script: str) -> int:
    c = pipes.child
    actions = [
        (os.POSIX_SPAWN_DUP2, c.stdin, 0),
        (os.POSIX_SPAWN_DUP2, c.stdout, 1),
        (os.POSIX_SPAWN_DUP2, c.stderr, 2),
    ]
    pid = os.posix_spawn("/bin/sh", ["sh", "-c", script], os.environ, file_actions=actions)
    pipes.close_child()
    return pid


def test_process_stdio_exit_status_and_close_during_a_read() -> None:
    import threading

    from trustpod.agent.process import Pipes, Process

    pipes = Pipes()
    proc = Process(
        "e", _spawn(pipes, "read x; echo got-$x; echo err >&2; exit 5"), pipes, init=False
    )
    assert proc.write(b"in\n") == 3
    proc.close_stdin()
    with pytest.raises(EvidenceError):
        proc.write(b"late")
    out = b""
    while chunk := proc.read(True, 2):  # at most `len` bytes per read, b"" at EOF
        assert len(chunk) <= 2
        out += chunk
    assert out == b"got-in\n" and proc.read(False, 100) == b"err\n"
    assert proc.wait(10) and proc.status == 5
    proc.close()
    assert proc.read(True, 10) == b""

    pipes = Pipes()
    proc = Process("s", _spawn(pipes, "exec sleep 30"), pipes, init=False)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(proc.read(True, 10)))
    reader.start()
    time.sleep(0.2)
    proc.signal(signal.SIGKILL)
    assert proc.wait(10) and proc.status == 128 + signal.SIGKILL
    proc.close()  # the blocked read ends with EOF; its fd is closed by it, not under it
    reader.join(5)
    assert got == [b""]
