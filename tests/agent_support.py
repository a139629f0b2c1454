"""Helpers for the agent tests: busybox root filesystems, kata-shaped requests, a served agent."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

BUSYBOX = Path("/bin/busybox")
IMAGE = "registry.local/test/busybox:1"
PAUSE = "registry.local/pause:3.9"
#: The applets the tests use (symlinks are slow to create on this machine's /tmp: ~1.4 ms each).
APPLETS = ("sh", "echo", "cat", "sleep", "wget", "head", "tail", "true", "env", "ls", "kill")


def need_runc() -> None:
    if shutil.which("runc") is None:
        pytest.skip("runc not installed (apt install runc)")
    if not BUSYBOX.exists():
        pytest.skip("busybox-static not installed (apt install busybox-static)")
    if os.geteuid() != 0:
        pytest.skip("runc containers need root")


def busybox_rootfs(path: Path, *, pause: bool = False) -> Path:
    """A root filesystem with static busybox and its applets (plus ``/pause`` for pause)."""
    (path / "bin").mkdir(parents=True)
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (path / d).mkdir()
    shutil.copy2(BUSYBOX, path / "bin" / "busybox")
    for name in APPLETS:
        (path / "bin" / name).symlink_to("busybox")
    if pause:
        (path / "pause").write_text("#!/bin/sh\nexec sleep 2147483647\n")
        (path / "pause").chmod(0o755)
    return path


def container_request(
    pb: Any,
    cid: str,
    args: list[str],
    *,
    env: list[str] = (),  # type: ignore[assignment]
    image: str = IMAGE,
    sandbox: bool = False,
) -> Any:
    """A CreateContainerRequest shaped like containerd + kata's shim send it (guest pull)."""
    req = pb.grpc.CreateContainerRequest(container_id=cid, exec_id=cid)
    spec = req.OCI
    spec.Version = "1.1.0"
    spec.Process.Args.extend(args)
    spec.Process.Env.extend(["PATH=/bin", *env])
    spec.Process.Cwd = "/"
    spec.Root.Path = f"/run/kata-containers/shared/containers/{cid}/rootfs"
    spec.Hostname = "pod"
    for dest, typ, opts in (
        ("/proc", "proc", ["nosuid", "noexec", "nodev"]),
        ("/dev", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        ("/sys", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
    ):
        m = spec.Mounts.add(destination=dest, source=typ, type=typ)
        m.options.extend(opts)
    for ns in ("pid", "ipc", "uts", "mount", "network"):
        spec.Linux.Namespaces.add(Type=ns, Path="/proc/1/ns/" + ns if ns == "network" else "")
    spec.Linux.Resources.Devices.add(Allow=False, Access="rwm")
    spec.Linux.MaskedPaths.extend(["/proc/kcore", "/sys/firmware"])
    if sandbox:
        spec.Annotations["io.kubernetes.cri.container-type"] = "sandbox"
    else:
        spec.Annotations["io.kubernetes.cri.container-type"] = "container"
        spec.Annotations["io.kubernetes.cri.image-name"] = image
        req.storages.add(driver="image_guest_pull", source=image, mount_point=spec.Root.Path)
    return req


def initdata_toml(
    url: str, cert: str | None, policy: str, image: dict[str, Any] | None = None
) -> str:
    """An initdata document with aa.toml, cdh.toml (optionally its ``[image]``) and a policy."""
    import tomli_w

    kbs: dict[str, Any] = {"url": url} | ({"cert": cert} if cert else {})
    kbc: dict[str, Any] = {"name": "cc_kbc", "url": url} | ({"kbs_cert": cert} if cert else {})
    cdh: dict[str, Any] = {
        "socket": "unix:///run/confidential-containers/cdh.sock",
        "credentials": [],
        "kbc": kbc,
    }
    if image is not None:
        cdh["image"] = image
    data = {
        "aa.toml": tomli_w.dumps({"token_configs": {"kbs": kbs}}),
        "cdh.toml": tomli_w.dumps(cdh),
        "policy.rego": policy,
    }
    return tomli_w.dumps({"algorithm": "sha256", "version": "0.1.0", "data": data})


def sample_guest_dir(tmp: Path, initdata: str) -> tuple[Path, int]:
    """A guest config dir ``tmp/guest`` (sample attester, keys in ``tmp/keys``) holding
    ``initdata``, its guest API on a free 127.0.0.1 port; the dir and that port."""
    d = tmp / "guest"
    d.mkdir()
    (tmp / "keys").mkdir()
    (d / "initdata.toml").write_text(initdata)
    port = free_port()
    (d / "guest.toml").write_text(
        f'attester = "sample"\nkey_dir = "{tmp / "keys"}"\napi_listen = "127.0.0.1:{port}"\n'
    )
    return d, port


def need_registry_tools() -> None:
    """Skip unless the image-pull tests' peers are installed: docker-registry and skopeo."""
    for tool, pkg in (("docker-registry", "docker-registry"), ("skopeo", "skopeo")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt package {pkg})")


@contextmanager
def pulling_agent(
    tmp: Path, kbs_url: str, kbs_cert: str, image: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """``trustpod agent serve`` (sample TEE, ALLOW_ALL agent policy) pulling images through the
    CDH: a guest config dir under ``tmp`` whose initdata names the KBS at ``kbs_url`` (TLS,
    ``kbs_cert``) and ``image`` as cdh.toml's ``[image]``; listens on ``tmp/agent.sock``.
    Yields the agent's ready line."""
    from trustpod.agent.policy_defaults import ALLOW_ALL

    d, _ = sample_guest_dir(tmp, initdata_toml(kbs_url, kbs_cert, ALLOW_ALL, image))
    with agent_process(d, [f"unix:{tmp / 'agent.sock'}"], images=None) as ready:
        yield ready


def run_then_refuse(
    address: str,
    allowed: tuple[str, str, list[str], bytes],
    refused: tuple[str, str, str],
) -> None:
    """Over the agent API at ``address``: the ``allowed`` container ``(id, image, argv, stdout)``
    is created, runs, prints exactly ``stdout``, exits 0 and is removed; the ``refused`` one
    ``(id, image, text)`` fails CreateContainer with PERMISSION_DENIED whose message contains
    ``text``, and nothing of it exists afterwards (StartContainer: NOT_FOUND)."""
    from trustpod.agent.client import AgentClient
    from trustpod.agent.pb import protos
    from trustpod.agent.rpc import Code, RpcError

    pb = protos()
    ok_id, ok_image, argv, stdout = allowed
    with AgentClient(address) as agent:
        ok = container_request(pb, ok_id, argv, image=ok_image)
        agent.call("CreateContainer", ok)
        agent.call("StartContainer", pb.grpc.StartContainerRequest(container_id=ok_id))
        read = pb.grpc.ReadStreamRequest(container_id=ok_id, len=100)
        assert agent.call("ReadStdout", read).data == stdout
        wait = pb.grpc.WaitProcessRequest(container_id=ok_id)
        assert agent.call("WaitProcess", wait).status == 0
        agent.call("RemoveContainer", pb.grpc.RemoveContainerRequest(container_id=ok_id))

        bad_id, bad_image, text = refused
        bad = container_request(pb, bad_id, ["true"], image=bad_image)
        with pytest.raises(RpcError) as denied:
            agent.call("CreateContainer", bad)
        assert denied.value.code == Code.PERMISSION_DENIED
        assert text in denied.value.status_message
        with pytest.raises(RpcError) as absent:
            agent.call("StartContainer", pb.grpc.StartContainerRequest(container_id=bad_id))
        assert absent.value.code == Code.NOT_FOUND


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def agent_process(
    config_dir: Path, listen: list[str], *, images: Path | None, timeout_s: float = 60.0
) -> Iterator[dict[str, Any]]:
    """``trustpod agent serve`` as a child process; yields its ready line; SIGTERM at exit.
    ``images``: ``--local-images`` directory, or None to pull through the CDH-configured puller."""
    argv = [sys.executable, "-m", "trustpod.cli", "agent", "serve", "--config-dir"]
    argv += [str(config_dir)]
    if images is not None:
        argv += ["--local-images", str(images)]
    for a in listen:
        argv += ["--listen", a]
    log = (config_dir.parent / "agent-stderr.log").open("w+")
    # stderr to a file: a pipe nobody reads would block the agent once it is full
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        line = proc.stdout.readline()
        if not line:
            proc.wait()
            log.seek(0)
            raise AssertionError(f"agent exited ({proc.returncode}): {log.read()}")
        assert time.monotonic() < deadline
        yield {**json.loads(line), "proc": proc, "log": log}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()
        log.close()
