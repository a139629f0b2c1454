"""A pod under a policy from ``trustpod policy generate --resolve``, enforced by
``trustpod agent serve`` over ttRPC: images pulled from a real docker-registry (pushed with skopeo)
and pinned to their digests, containers in runc.

The pod's own pause + app containers run; the exec listed in the pod annotation runs, another
exec is PERMISSION_DENIED; a container that is not in the pod and the app with a different image
digest are refused before anything is pulled; output reads are redacted (genpolicy's default
denies ReadStreamRequest) instead of failing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent_support import (
    agent_process,
    busybox_rootfs,
    initdata_toml,
    need_registry_tools,
    need_runc,
    sample_guest_dir,
)
from trustpod.agent.client import AgentClient
from trustpod.agent.pb import protos
from trustpod.agent.rpc import Code, RpcError
from trustpod.cli.main import main

SANDBOX = "a" * 64
APP = "b" * 64
SHARED = "/run/kata-containers/shared/containers"
PB = protos()


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    need_runc()
    need_registry_tools()
    from oci_support import Registry, build_image, skopeo_copy
    from oci_support import busybox_rootfs as image_rootfs

    tmp = tmp_path_factory.mktemp("genpol")
    reg = Registry(tmp / "registry")
    try:
        root = image_rootfs(tmp / "rootfs")
        server = root / "bin" / "server"
        server.write_text("#!/bin/sh\necho server-up $MODE\nexec sleep 3600\n")
        server.chmod(0o755)
        (root / "bin" / "sleep").symlink_to("busybox")
        build_image(tmp / "layout", root, "1")
        build_image(tmp / "layout", root, "2", extra_layers=[b"\0" * 1024])
        skopeo_copy(f"oci:{tmp / 'layout'}:1", f"docker://{reg.host}/shop/app:1")
        skopeo_copy(f"oci:{tmp / 'layout'}:2", f"docker://{reg.host}/shop/app:2")
        pod_yaml = tmp / "pod.yaml"
        pod_yaml.write_text(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\n"
            "  annotations:\n"
            '    io.trustpod.policy/exec: \'{"app": [["echo", "exec-ok"]]}\'\n'
            "spec:\n  automountServiceAccountToken: false\n  containers:\n"
            f"  - name: app\n    image: {reg.host}/shop/app:1\n"
            '    command: ["/bin/server"]\n'
            "    env: [{name: MODE, value: prod}, {name: PATH, value: /bin}]\n"
            "    securityContext: {runAsUser: 1000, runAsGroup: 1000}\n"
        )
        policy = tmp / "policy.rego"
        argv = ["policy", "generate", str(pod_yaml), "--resolve"]
        argv += ["--insecure-http-registry", reg.host, "-o", str(policy)]
        assert main(argv) == 0
        text = policy.read_text()
        pinned = next(
            word.strip('",')
            for word in text.split()
            if word.strip('",').startswith(f"{reg.host}/shop/app@sha256:")
        )
        image = {"insecure_http_registries": [reg.host], "work_dir": str(tmp / "image-work")}
        d, _ = sample_guest_dir(tmp, initdata_toml("https://127.0.0.1:1", None, text, image))
        busybox_rootfs(d / "pause" / "rootfs", pause=True)
        with agent_process(d, [f"unix:{tmp / 'agent.sock'}"], images=None) as ready:
            yield {"ready": ready, "pinned": pinned, "host": reg.host, "dir": d}
    finally:
        reg.close()


def _request(cid: str, name: str | None, image: str | None) -> Any:
    """CreateContainerRequest as containerd + kata's shim build it for this pod."""
    req = PB.grpc.CreateContainerRequest(container_id=cid, exec_id=cid)
    spec = req.OCI
    spec.Version = "1.1.0"
    a = spec.Annotations
    a["io.kubernetes.cri.container-type"] = "sandbox" if name is None else "container"
    a["io.kubernetes.cri.sandbox-name"] = "web"
    a["io.kubernetes.cri.sandbox-namespace"] = "shop"
    a["io.kubernetes.cri.sandbox-id"] = SANDBOX
    spec.Root.Path = f"/run/kata-containers/{cid}/rootfs"
    spec.Mounts.add(destination="/proc", source="proc", type="proc", options=["nosuid"])
    spec.Mounts.add(
        destination="/etc/hosts",
        source=f"{SHARED}/{cid}-{'0' * 16}-hosts",
        type="bind",
        options=["rbind", "rprivate", "ro"],
    )
    spec.Process.Cwd = "/"
    for ns in ("ipc", "uts", "mount"):
        spec.Linux.Namespaces.add(Type=ns)
    if name is None:
        spec.Linux.Namespaces.add(Type="network", Path="/run/netns/podns")
        spec.Root.Readonly = True
        spec.Process.Args.append("/pause")
        spec.Process.Env.append("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        spec.Process.User.UID = spec.Process.User.GID = 65535
        spec.Process.NoNewPrivileges = True
    else:
        a["io.kubernetes.cri.container-name"] = name
        a["io.kubernetes.cri.image-name"] = image or ""
        spec.Process.Args.append("/bin/server")
        spec.Process.Env.extend(["MODE=prod", "PATH=/bin", "HOSTNAME=web"])
        spec.Process.User.UID = spec.Process.User.GID = 1000
        req.storages.add(
            driver="image_guest_pull",
            source=image or "",
            mount_point=f"/run/kata-containers/{cid}/rootfs",
            fstype="overlay",
        )
    return req


def _hosts(agent: AgentClient, cid: str) -> None:
    data = b"127.0.0.1 localhost\n"
    agent.call(
        "CopyFile",
        PB.grpc.CopyFileRequest(
            path=f"{SHARED}/{cid}-{'0' * 16}-hosts",
            file_size=len(data),
            file_mode=0o100644,
            dir_mode=0o750,
            data=data,
        ),
    )


def _exec(args: list[str], eid: str) -> Any:
    process = PB.grpc.Process(Args=args, Cwd="/", Env=["PATH=/bin"])
    process.User.UID = process.User.GID = 1000
    return PB.grpc.ExecProcessRequest(container_id=APP, exec_id=eid, process=process)


def test_generated_policy_runs_its_pod_and_refuses_the_rest(pod: dict[str, Any]) -> None:
    pinned = pod["pinned"]
    with AgentClient(pod["ready"]["agent"][0]) as agent:
        agent.call(
            "CreateSandbox", PB.grpc.CreateSandboxRequest(sandbox_id=SANDBOX, hostname="web")
        )
        for cid in (SANDBOX, APP):
            _hosts(agent, cid)
        agent.call("CreateContainer", _request(SANDBOX, None, None))
        agent.call("StartContainer", PB.grpc.StartContainerRequest(container_id=SANDBOX))
        agent.call("CreateContainer", _request(APP, "app", pinned))
        agent.call("StartContainer", PB.grpc.StartContainerRequest(container_id=APP))
        # genpolicy's default: ReadStreamRequest false -> the output is redacted, not an error
        read = PB.grpc.ReadStreamRequest(container_id=APP, len=100)
        assert agent.call("ReadStdout", read).data == b""

        agent.call("ExecProcess", _exec(["echo", "exec-ok"], "e1"))
        wait = PB.grpc.WaitProcessRequest(container_id=APP, exec_id="e1")
        assert agent.call("WaitProcess", wait).status == 0
        with pytest.raises(RpcError) as denied:
            agent.call("ExecProcess", _exec(["cat", "/etc/passwd"], "e2"))
        assert denied.value.code == Code.PERMISSION_DENIED
        assert "ExecProcessRequest is blocked by policy" in denied.value.status_message

        intruder = "c" * 64
        _hosts(agent, intruder)
        with pytest.raises(RpcError) as not_in_pod:
            agent.call("CreateContainer", _request(intruder, "intruder", pinned))
        assert not_in_pod.value.code == Code.PERMISSION_DENIED
        second = "d" * 64
        _hosts(agent, second)
        other = pinned.split("@")[0] + "@sha256:" + "e" * 64
        with pytest.raises(RpcError) as digest:
            agent.call("CreateContainer", _request(second, "app", other))
        assert digest.value.code == Code.PERMISSION_DENIED
        # control: the same request with the pinned digest is allowed (so the digest was why)
        agent.call("CreateContainer", _request(second, "app", pinned))
        agent.call("RemoveContainer", PB.grpc.RemoveContainerRequest(container_id=second))

        signal_req = PB.grpc.SignalProcessRequest(container_id=APP, signal=9)
        agent.call("SignalProcess", signal_req)
        status = agent.call("WaitProcess", PB.grpc.WaitProcessRequest(container_id=APP)).status
        assert status == 137
        for cid in (APP, SANDBOX):
            agent.call("RemoveContainer", PB.grpc.RemoveContainerRequest(container_id=cid))
