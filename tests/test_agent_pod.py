"""A pod run by ``trustpod agent serve`` over real ttRPC (unix socket and TCP), containers in runc.

The agent runs as a child process (it becomes the child subreaper), attests with the sample TEE
against a real trustpod KBS over TLS (built-in attestation service), and runs a two-container
pod from busybox root filesystems: the pause container from the config dir, an app container
that prints a secret it received as a sealed env value and fetches a resource from the pod's
CDH API on 127.0.0.1, exec, wait exit codes, signals, stdin, CopyFile and the network records.
"""

from __future__ import annotations

import json
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from agent_support import (
    IMAGE,
    agent_process,
    busybox_rootfs,
    container_request,
    need_runc,
    sample_guest_dir,
)
from kbs_support import builtin_kbs, serve
from trustpod.agent.client import AgentClient
from trustpod.agent.pb import protos
from trustpod.agent.policy_defaults import ALLOW_ALL, ALLOW_ALL_EXCEPT_EXEC_PROCESS
from trustpod.agent.rpc import Code, RpcError
from trustpod.cli.initdata import build_initdata
from trustpod.kbs.config import parse_config
from trustpod.sealed import VaultSecret, generate_signing_key, public_jwk, seal

SIGNER = generate_signing_key()
SECRET = b"s3cr3t-from-the-kbs"


@pytest.fixture(scope="module")
def pod_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import tomllib

    need_runc()
    tmp = tmp_path_factory.mktemp("agentpod")
    ca = trustme.CA()
    config = parse_config(
        tomllib.loads("[http_server]\ninsecure_http = true\n[attestation_service]\ntimeout = 5\n"),
        tmp / "kbs-config.toml",
    )
    app, core = builtin_kbs(config)
    core.set_resource("default/key/1", SECRET)
    core.set_resource("default/plain/1", b"plain-resource")
    core.set_resource("default/sealed-key/1", json.dumps(public_jwk(SIGNER.public_key())).encode())
    with serve(app, cert=ca.issue_cert("127.0.0.1")) as url:
        initdata = build_initdata(url, kbs_cert=ca.cert_pem.bytes().decode(), policy=ALLOW_ALL)
        d, api_port = sample_guest_dir(tmp, initdata)
        busybox_rootfs(d / "pause" / "rootfs", pause=True)
        images = tmp / "images"
        busybox_rootfs(images / IMAGE.replace("/", "_").replace(":", "_"))
        sock = tmp / "agent.sock"
        with agent_process(d, [f"unix:{sock}", "tcp:127.0.0.1:0"], images=images) as ready:
            yield {"ready": ready, "api_port": api_port, "dir": d, "tmp": tmp}


def sealed_env() -> str:
    return seal(VaultSecret(name="kbs:///default/key/1"), SIGNER, "kbs:///default/sealed-key/1")


def read_all(agent: AgentClient, cid: str, eid: str = "", *, stderr: bool = False) -> bytes:
    pb = agent.pb
    out = b""
    method = "ReadStderr" if stderr else "ReadStdout"
    while True:
        chunk = agent.call(
            method, pb.grpc.ReadStreamRequest(container_id=cid, exec_id=eid, len=4096)
        ).data
        if not chunk:
            return out
        out += chunk


def test_two_container_pod_over_unix_socket(pod_env: dict[str, Any]) -> None:
    pb = protos()
    unix_addr = pod_env["ready"]["agent"][0]
    assert unix_addr.startswith("unix:")
    sock_path = Path(unix_addr.removeprefix("unix:"))
    assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600
    port = pod_env["api_port"]
    with AgentClient(unix_addr) as agent:
        agent.call("CreateSandbox", pb.grpc.CreateSandboxRequest(sandbox_id="pod1", hostname="p"))
        agent.call("CreateContainer", container_request(pb, "pause", ["/pause"], sandbox=True))
        agent.call("StartContainer", pb.grpc.StartContainerRequest(container_id="pause"))
        script = (
            'echo "secret=$SECRET"; '
            f"wget -q -O - http://127.0.0.1:{port}/cdh/resource/default/plain/1; echo; "
            'echo to-stderr >&2; read line; echo "stdin=$line"; exit 7'
        )
        req = container_request(pb, "app", ["sh", "-c", script], env=[f"SECRET={sealed_env()}"])
        agent.call("CreateContainer", req)
        # the unsealed value is in the bundle the agent wrote, never the sealed one
        agent.call("StartContainer", pb.grpc.StartContainerRequest(container_id="app"))
        w = agent.call(
            "WriteStdin", pb.grpc.WriteStreamRequest(container_id="app", data=b"hello\n")
        )
        assert w.len == 6
        agent.call("CloseStdin", pb.grpc.CloseStdinRequest(container_id="app"))
        out = read_all(agent, "app")
        assert out == f"secret={SECRET.decode()}\nplain-resource\nstdin=hello\n".encode()
        assert read_all(agent, "app", stderr=True) == b"to-stderr\n"
        status = agent.call("WaitProcess", pb.grpc.WaitProcessRequest(container_id="app"))
        assert status.status == 7

        # exec in the pause container; exit code; then a signal to an exec
        proc = pb.grpc.Process(Args=["sh", "-c", "echo exec-ok; exit 3"], Cwd="/")
        proc.Env.append("PATH=/bin")
        agent.call(
            "ExecProcess",
            pb.grpc.ExecProcessRequest(container_id="pause", exec_id="e1", process=proc),
        )
        assert read_all(agent, "pause", "e1") == b"exec-ok\n"
        wait = pb.grpc.WaitProcessRequest(container_id="pause", exec_id="e1")
        assert agent.call("WaitProcess", wait).status == 3
        with pytest.raises(RpcError) as gone:
            agent.call("WaitProcess", wait)  # kata forgets a waited exec process
        assert gone.value.code == Code.NOT_FOUND

        sleeper = pb.grpc.Process(Args=["/bin/sleep", "100"], Cwd="/")
        agent.call(
            "ExecProcess",
            pb.grpc.ExecProcessRequest(container_id="pause", exec_id="e2", process=sleeper),
        )
        agent.call(
            "SignalProcess",
            pb.grpc.SignalProcessRequest(container_id="pause", exec_id="e2", signal=15),
        )
        e2 = pb.grpc.WaitProcessRequest(container_id="pause", exec_id="e2")
        assert agent.call("WaitProcess", e2).status == 128 + signal.SIGTERM

        stats = agent.call("StatsContainer", pb.grpc.StatsContainerRequest(container_id="pause"))
        assert stats.HasField("cgroup_stats")

        # the pause init (sleep as PID 1) ignores SIGTERM: kata turns it into SIGKILL
        agent.call("SignalProcess", pb.grpc.SignalProcessRequest(container_id="pause", signal=15))
        pause_wait = pb.grpc.WaitProcessRequest(container_id="pause")
        assert agent.call("WaitProcess", pause_wait).status == 128 + signal.SIGKILL
        for cid in ("app", "pause"):
            agent.call("RemoveContainer", pb.grpc.RemoveContainerRequest(container_id=cid))
        with pytest.raises(RpcError) as missing:
            agent.call("StartContainer", pb.grpc.StartContainerRequest(container_id="app"))
        assert missing.value.code == Code.NOT_FOUND


def test_tcp_unknown_rpc_network_copyfile_and_refusals(pod_env: dict[str, Any]) -> None:
    pb = protos()
    tcp_addr = pod_env["ready"]["agent"][1]
    assert tcp_addr.startswith("tcp:127.0.0.1:")
    with AgentClient(tcp_addr) as agent:
        with pytest.raises(RpcError) as unimpl:
            agent.call_raw("grpc.AgentService", "PauseContainer", b"")
        assert unimpl.value.code == Code.UNIMPLEMENTED == 12
        with pytest.raises(RpcError) as unsvc:
            agent.call_raw("grpc.HealthService", "Check", b"")
        assert unsvc.value.code == Code.UNIMPLEMENTED

        health = pb.grpc.HealthCheckResponse()
        health.ParseFromString(
            agent.call_raw("grpc.Health", "Check", pb.grpc.CheckRequest().SerializeToString())
        )
        assert health.status == 1  # SERVING
        details = agent.call("GetGuestDetails", pb.grpc.GuestDetailsRequest(mem_block_size=True))
        assert "sealed-secret" in details.agent_details.extra_features

        iface = pb.types.Interface(name="eth0", mtu=1450, hwAddr="02:00:00:00:00:01")
        iface.IPAddresses.add(address="10.0.0.5", mask="24")
        got = agent.call("UpdateInterface", pb.grpc.UpdateInterfaceRequest(interface=iface))
        assert got == iface
        routes = pb.grpc.Routes()
        routes.Routes.add(dest="0.0.0.0/0", gateway="10.0.0.1", device="eth0")
        agent.call("UpdateRoutes", pb.grpc.UpdateRoutesRequest(routes=routes))
        listed = agent.call("ListInterfaces", pb.grpc.ListInterfacesRequest())
        assert list(listed.Interfaces) == [iface]
        assert agent.call("ListRoutes", pb.grpc.ListRoutesRequest()) == routes

        base = "/run/kata-containers/shared/containers"
        data = b"nameserver 10.0.0.1\n"
        agent.call(
            "CopyFile",
            pb.grpc.CopyFileRequest(
                path=f"{base}/app-resolv.conf", file_size=len(data), file_mode=0o100644, data=data
            ),
        )
        copied = pod_env["dir"] / "state" / "run" / "shared" / "containers" / "app-resolv.conf"
        assert copied.read_bytes() == data
        for bad in ("/etc/passwd", f"{base}/../../../etc/x", f"{base}/a/./b"):
            with pytest.raises(RpcError) as refused:
                agent.call("CopyFile", pb.grpc.CopyFileRequest(path=bad, file_size=1, data=b"x"))
            assert refused.value.code == Code.INVALID_ARGUMENT

        # a sealed env value that does not verify stops the container, naming the variable
        tampered = sealed_env()[:-6] + "AAAAAA"
        req = container_request(pb, "bad", ["true"], env=[f"DB_PASSWORD={tampered}"])
        with pytest.raises(RpcError) as unseal:
            agent.call("CreateContainer", req)
        assert "DB_PASSWORD" in unseal.value.status_message
        with pytest.raises(RpcError) as nothing:
            agent.call("StartContainer", pb.grpc.StartContainerRequest(container_id="bad"))
        assert nothing.value.code == Code.NOT_FOUND

        # a CopyFile'd symlink cannot turn a shared-dir bind mount into a host bind mount
        agent.call(
            "CopyFile",
            pb.grpc.CopyFileRequest(path=f"{base}/escape", file_mode=0o120777, data=b"/etc"),
        )
        req = container_request(pb, "esc", ["true"])
        req.OCI.Mounts.add(destination="/x", source=f"{base}/escape", type="bind")
        with pytest.raises(RpcError) as escape:
            agent.call("CreateContainer", req)
        assert escape.value.code == Code.INVALID_ARGUMENT
        assert "outside" in escape.value.status_message
        # a host bind mount is refused (nothing of the host is shared with the pod)
        req = container_request(pb, "hostmount", ["true"])
        req.OCI.Mounts.add(destination="/host", source="/etc", type="bind", options=["rbind"])
        with pytest.raises(RpcError) as host:
            agent.call("CreateContainer", req)
        assert host.value.code == Code.INVALID_ARGUMENT


def test_secret_volume_and_oom_event(pod_env: dict[str, Any]) -> None:
    """A secret volume copied in with CopyFile holds a sealed file: the agent unseals it into
    place before start; a container over its memory limit is OOM-killed and reported."""
    pb = protos()
    base = "/run/kata-containers/shared/containers"
    vol = f"{base}/app2-secret"
    sealed = sealed_env().encode()
    with AgentClient(pod_env["ready"]["agent"][0]) as agent:
        agent.call("CopyFile", pb.grpc.CopyFileRequest(path=vol, file_mode=0o040755))
        half = len(sealed) // 2
        for offset, chunk in ((0, sealed[:half]), (half, sealed[half:])):
            agent.call(
                "CopyFile",
                pb.grpc.CopyFileRequest(
                    path=f"{vol}/token",
                    file_size=len(sealed),
                    file_mode=0o100644,
                    offset=offset,
                    data=chunk,
                ),
            )
        req = container_request(pb, "app2", ["cat", "/secret/token.unsealed"])
        m = req.OCI.Mounts.add(destination="/secret", source=vol, type="bind")
        m.options.extend(["rbind", "ro"])
        agent.call("CreateContainer", req)
        agent.call("StartContainer", pb.grpc.StartContainerRequest(container_id="app2"))
        assert read_all(agent, "app2") == SECRET
        assert (
            agent.call("WaitProcess", pb.grpc.WaitProcessRequest(container_id="app2")).status == 0
        )
        agent.call("RemoveContainer", pb.grpc.RemoveContainerRequest(container_id="app2"))

        if not Path("/sys/fs/cgroup/memory").is_dir():
            return
        hog = container_request(pb, "hog", ["sh", "-c", "head -c 400000000 /dev/zero | tail"])
        hog.OCI.Linux.Resources.Memory.Limit = 16 << 20
        agent.call("CreateContainer", hog)
        agent.call("StartContainer", pb.grpc.StartContainerRequest(container_id="hog"))
        oom = agent.call("GetOOMEvent", pb.grpc.GetOOMEventRequest(), timeout_s=30)
        assert oom.container_id == "hog"
        agent.call("WaitProcess", pb.grpc.WaitProcessRequest(container_id="hog"))
        agent.call("RemoveContainer", pb.grpc.RemoveContainerRequest(container_id="hog"))


def test_cli_call(pod_env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from trustpod.cli.main import main

    addr = pod_env["ready"]["agent"][1]
    assert main(["agent", "call", "--connect", addr, "GetGuestDetails"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "sealed-secret" in out["agent_details"]["extra_features"]
    argv = ["agent", "call", "--connect", addr, "StartContainer", '{"container_id": "nope"}']
    assert main(argv) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main(["agent", "call", "--connect", addr, "CopyFile", '{"bogus": 1}']) == 4


def test_oom_event_blocks_until_deadline(pod_env: dict[str, Any]) -> None:
    pb = protos()
    with AgentClient(pod_env["ready"]["agent"][0]) as agent:
        started = time.monotonic()
        with pytest.raises(RpcError) as timeout:
            agent.call("GetOOMEvent", pb.grpc.GetOOMEventRequest(), timeout_s=0.5)
        assert timeout.value.code == Code.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 5


def test_zz_set_policy_then_exec_refused(pod_env: dict[str, Any]) -> None:
    """Last in the module: SetPolicy (checked by the initdata's allow-all) installs kata's
    allow-all-except-exec-process; exec is then PERMISSION_DENIED, other calls still work."""
    pb = protos()
    with AgentClient(pod_env["ready"]["agent"][0]) as agent:
        agent.call("CreateContainer", container_request(pb, "p2", ["/pause"], sandbox=True))
        agent.call("StartContainer", pb.grpc.StartContainerRequest(container_id="p2"))
        agent.call("SetPolicy", pb.grpc.SetPolicyRequest(policy=ALLOW_ALL_EXCEPT_EXEC_PROCESS))
        proc = pb.grpc.Process(Args=["true"], Cwd="/")
        exec_req = pb.grpc.ExecProcessRequest(container_id="p2", exec_id="x", process=proc)
        with pytest.raises(RpcError) as denied:
            agent.call("ExecProcess", exec_req)
        assert denied.value.code == Code.PERMISSION_DENIED == 7
        assert "ExecProcessRequest is blocked by policy" in denied.value.status_message
        with pytest.raises(RpcError) as bad:
            agent.call("SetPolicy", pb.grpc.SetPolicyRequest(policy="package x\nthis is not rego"))
        assert bad.value.code == Code.INVALID_ARGUMENT
        agent.call("RemoveContainer", pb.grpc.RemoveContainerRequest(container_id="p2"))
