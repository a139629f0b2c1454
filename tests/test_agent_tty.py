"""Terminal processes and the shared PID namespace, through ``trustpod agent serve`` + runc.

The agent runs as a child process (allow-all policy, busybox images from ``--local-images``);
every call goes over real ttRPC. A pod's pause container is created first (its PID namespace
is the sandbox's, as in kata), then:

- a container and execs with ``Terminal: true``: output through ReadStdout (stderr merged, and
  ReadStderr reading the same terminal as kata does), input echoed by the tty, TtyWinResize
  seen by ``stty size``, exit codes, CloseStdin hanging the terminal up (SIGHUP);
- containers with and without ``sandbox_pidns``: only the former see the pause process.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_support import (
    IMAGE,
    agent_process,
    busybox_rootfs,
    container_request,
    initdata_toml,
    need_runc,
    sample_guest_dir,
)
from trustpod.agent.client import AgentClient
from trustpod.agent.console import ConsoleSocket
from trustpod.agent.images import local_name
from trustpod.agent.pb import protos
from trustpod.agent.pidns import SandboxPidNamespace
from trustpod.agent.policy_defaults import ALLOW_ALL
from trustpod.agent.process import TERMINAL_DRAIN_S, Process, Terminal
from trustpod.agent.rpc import Code, RpcError
from trustpod.errors import DependencyError, EvidenceError

PB = protos()
PAUSE_CMD = b"sleep 2147483647"
#: A line-driven script for the terminal container: canonical-mode reads, the tty echoes.
TTY_SCRIPT = (
    "echo ready; while read line; do case $line in "
    "size) stty size ;; err) echo to-stderr >&2 ;; exit*) exit ${line#exit } ;; "
    '*) echo "got=$line" ;; esac; done'
)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentClient]:
    need_runc()
    tmp = tmp_path_factory.mktemp("agenttty")
    # no KBS: nothing here attests or fetches a resource
    d, _ = sample_guest_dir(tmp, initdata_toml("http://127.0.0.1:9", None, ALLOW_ALL))
    busybox_rootfs(d / "pause" / "rootfs", pause=True)
    root = busybox_rootfs(tmp / "images" / local_name(IMAGE))
    for applet in ("stty", "tty", "ps"):
        (root / "bin" / applet).symlink_to("busybox")
    with agent_process(d, [f"unix:{tmp / 'agent.sock'}"], images=tmp / "images") as ready:
        with AgentClient(ready["agent"][0]) as client:
            client.call("CreateSandbox", PB.grpc.CreateSandboxRequest(sandbox_id="tty"))
            pause = container_request(PB, "pause", ["/pause"], sandbox=True)
            client.call("CreateContainer", pause)
            client.call("StartContainer", PB.grpc.StartContainerRequest(container_id="pause"))
            yield client


def with_devpts(req: Any) -> Any:
    """containerd's ``/dev/pts`` mount (a terminal's slave lives there; runc links /dev/ptmx)."""
    m = req.OCI.Mounts.add(destination="/dev/pts", source="devpts", type="devpts")
    m.options.extend(["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"])
    return req


def read_until(
    agent: AgentClient, cid: str, pattern: bytes, eid: str = "", *, stderr: bool = False
) -> bytes:
    """Terminal output until ``pattern`` (a regex) matches; each read may wait 10 s."""
    method = "ReadStderr" if stderr else "ReadStdout"
    out = b""
    deadline = time.monotonic() + 15
    while not re.search(pattern, out):
        assert time.monotonic() < deadline, out
        req = PB.grpc.ReadStreamRequest(container_id=cid, exec_id=eid, len=4096)
        chunk = agent.call(method, req, timeout_s=10).data
        assert chunk, f"end of stream before {pattern!r}: {out!r}"
        out += chunk
    return out


def read_to_eof(agent: AgentClient, cid: str, eid: str = "") -> bytes:
    out = b""
    while chunk := agent.call(
        "ReadStdout", PB.grpc.ReadStreamRequest(container_id=cid, exec_id=eid, len=4096)
    ).data:
        out += chunk
    return out


def write(agent: AgentClient, cid: str, data: bytes, eid: str = "") -> None:
    req = PB.grpc.WriteStreamRequest(container_id=cid, exec_id=eid, data=data)
    assert agent.call("WriteStdin", req).len == len(data)


def resize(agent: AgentClient, cid: str, rows: int, cols: int, eid: str = "") -> None:
    req = PB.grpc.TtyWinResizeRequest(container_id=cid, exec_id=eid, row=rows, column=cols)
    agent.call("TtyWinResize", req)


def wait(agent: AgentClient, cid: str, eid: str = "") -> int:
    req = PB.grpc.WaitProcessRequest(container_id=cid, exec_id=eid)
    status: int = agent.call("WaitProcess", req, timeout_s=15).status
    return status


def remove(agent: AgentClient, cid: str) -> None:
    agent.call("RemoveContainer", PB.grpc.RemoveContainerRequest(container_id=cid))


def exec_request(cid: str, eid: str, args: list[str], *, terminal: bool) -> Any:
    proc = PB.grpc.Process(Args=args, Cwd="/", Terminal=terminal)
    proc.Env.append("PATH=/bin")
    return PB.grpc.ExecProcessRequest(container_id=cid, exec_id=eid, process=proc)


def test_terminal_container_output_input_resize_and_exit(agent: AgentClient) -> None:
    req = with_devpts(container_request(PB, "term", ["sh", "-c", TTY_SCRIPT]))
    req.OCI.Process.Terminal = True
    agent.call("CreateContainer", req)
    resize(agent, "term", 33, 101)  # the pty exists from create on
    agent.call("StartContainer", PB.grpc.StartContainerRequest(container_id="term"))
    assert b"ready\r\n" in read_until(agent, "term", rb"ready\r\n")  # onlcr: a terminal
    write(agent, "term", b"size\n")
    assert re.search(rb"size\r\n33 101\r\n", read_until(agent, "term", rb"33 101\r\n"))
    resize(agent, "term", 40, 120)
    write(agent, "term", b"size\n")
    read_until(agent, "term", rb"40 120\r\n")
    write(agent, "term", b"hello\n")  # echoed by the tty, then answered
    assert b"hello\r\ngot=hello\r\n" in read_until(agent, "term", rb"got=hello\r\n")
    write(agent, "term", b"err\n")  # stderr is the terminal too
    read_until(agent, "term", rb"to-stderr\r\n")
    write(agent, "term", b"via-stderr\n")  # kata: ReadStderr reads the terminal as well
    read_until(agent, "term", rb"got=via-stderr\r\n", stderr=True)
    write(agent, "term", b"exit 7\n")
    assert wait(agent, "term") == 7
    assert b"got=" not in read_to_eof(agent, "term")  # the echoed line, then end of stream
    assert read_to_eof(agent, "term") == b""
    remove(agent, "term")


def test_terminal_exec_and_close_stdin_hangs_up(agent: AgentClient) -> None:
    agent.call("CreateContainer", with_devpts(container_request(PB, "plain", ["sleep", "30"])))
    agent.call("StartContainer", PB.grpc.StartContainerRequest(container_id="plain"))
    script = "read go; tty; stty size; read x; echo x=$x; exit 3"
    agent.call("ExecProcess", exec_request("plain", "e1", ["sh", "-c", script], terminal=True))
    resize(agent, "plain", 20, 70, "e1")
    write(agent, "plain", b"go\n", "e1")
    out = read_until(agent, "plain", rb"20 70\r\n", "e1")
    assert re.search(rb"/dev/pts/\d+\r\n20 70\r\n", out), out
    write(agent, "plain", b"hi\n", "e1")
    read_until(agent, "plain", rb"x=hi\r\n", "e1")
    assert wait(agent, "plain", "e1") == 3

    # CloseStdin of a terminal process: kata drops the master, the terminal hangs up
    agent.call("ExecProcess", exec_request("plain", "e2", ["cat"], terminal=True))
    write(agent, "plain", b"abc\n", "e2")
    assert read_until(agent, "plain", rb"abc\r\nabc\r\n", "e2").endswith(b"abc\r\nabc\r\n")
    agent.call("CloseStdin", PB.grpc.CloseStdinRequest(container_id="plain", exec_id="e2"))
    assert read_to_eof(agent, "plain", "e2") == b""
    with pytest.raises(RpcError) as closed:
        write(agent, "plain", b"late\n", "e2")
    assert closed.value.code == Code.INVALID_ARGUMENT
    with pytest.raises(RpcError) as no_tty:
        resize(agent, "plain", 10, 10, "e2")
    assert no_tty.value.code == Code.UNAVAILABLE
    assert wait(agent, "plain", "e2") == 128 + 1  # SIGHUP

    # a process without a terminal: TtyWinResize is kata's UNAVAILABLE "no tty"
    with pytest.raises(RpcError) as piped:
        resize(agent, "plain", 10, 10)
    assert piped.value.code == Code.UNAVAILABLE and "no tty" in piped.value.status_message
    # an empty WriteStdin is the EOF of stdin (kata)
    agent.call("ExecProcess", exec_request("plain", "e3", ["cat"], terminal=False))
    write(agent, "plain", b"piped\n", "e3")
    write(agent, "plain", b"", "e3")
    assert read_to_eof(agent, "plain", "e3") == b"piped\n"
    assert wait(agent, "plain", "e3") == 0
    remove(agent, "plain")


def test_shared_pid_namespace_sees_the_pause_process(agent: AgentClient) -> None:
    outputs = {}
    for cid, share in (("shared", True), ("own", False)):
        req = container_request(PB, cid, ["sh", "-c", "ps; echo pid=$$"])
        req.sandbox_pidns = share
        agent.call("CreateContainer", req)
        agent.call("StartContainer", PB.grpc.StartContainerRequest(container_id=cid))
        outputs[cid] = read_to_eof(agent, cid)
        assert wait(agent, cid) == 0
        remove(agent, cid)
    # in the pod's namespace PID 1 is the pause process and the container is not PID 1
    assert re.search(rb"(?m)^\s*1 .*" + PAUSE_CMD, outputs["shared"]), outputs["shared"]
    assert b"pid=1\n" not in outputs["shared"]
    assert PAUSE_CMD not in outputs["own"] and b"pid=1\n" in outputs["own"]

    # an exec in a shared-namespace container sees the pause process too
    req = container_request(PB, "shared2", ["sleep", "30"])
    req.sandbox_pidns = True
    agent.call("CreateContainer", req)
    agent.call("StartContainer", PB.grpc.StartContainerRequest(container_id="shared2"))
    agent.call("ExecProcess", exec_request("shared2", "ps", ["ps"], terminal=False))
    assert PAUSE_CMD in read_to_eof(agent, "shared2", "ps")
    assert wait(agent, "shared2", "ps") == 0
    remove(agent, "shared2")


# -- the parts on their own (no runc) --


def test_sandbox_pid_namespace_rules() -> None:
    ns = SandboxPidNamespace()
    with ns.join_path(False, containers=3) as path:
        assert path is None
    with ns.join_path(True, containers=0) as path:
        assert path is None  # the pod's first container makes the namespace
    with pytest.raises(EvidenceError, match="does not have sandbox_pidns"):
        with ns.join_path(True, containers=1):
            pass
    ns.record("pause", os.getpid(), containers=0)
    ns.record("app", 1, containers=1)  # only the first container's namespace counts
    with ns.join_path(True, containers=2) as path:
        assert path is not None and path.startswith(f"/proc/{os.getpid()}/fd/")
        assert os.readlink(path) == os.readlink("/proc/self/ns/pid")
    ns.removed("app")
    with ns.join_path(True, containers=1) as path:
        assert path is not None
    ns.removed("pause")
    with pytest.raises(EvidenceError, match="gone: container pause"):
        with ns.join_path(True, containers=1):
            pass
    ns.close()


def _send(path: str, fds: list[int]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(path)
        socket.send_fds(c, [b"/dev/ptmx"], fds)


def test_console_socket_accepts_only_a_pty_master(tmp_path: Path) -> None:
    master, slave = os.openpty()
    with ConsoleSocket(tmp_path / ("long" * 30), timeout_s=2) as console:
        assert len(console.path) < 108  # a long state dir falls back to the temp dir
        _send(console.path, [master])
        got = console.receive()
        assert os.isatty(got) and not os.get_inheritable(got)
        os.close(got)
    assert not console.dir.exists()
    r, w = os.pipe()
    for fds in ([r], [master, slave], []):
        with ConsoleSocket(tmp_path, timeout_s=2) as console:
            _send(console.path, fds)
            with pytest.raises(DependencyError, match="expected one pty master"):
                console.receive()
    with ConsoleSocket(tmp_path, timeout_s=0.1) as console:
        with pytest.raises(DependencyError, match="did not send"):
            console.receive()
    for fd in (r, w, master, slave):
        os.close(fd)


def test_terminal_read_drains_then_ends_after_exit() -> None:
    master, slave = os.openpty()
    script = "read x; echo x=$x; sleep 5 & echo bye"  # the background sleep keeps the tty open
    pid = os.posix_spawn(
        "/bin/sh",
        ["sh", "-c", script],
        os.environ,
        file_actions=[(os.POSIX_SPAWN_DUP2, slave, n) for n in (0, 1, 2)],
        setsid=True,
    )
    os.close(slave)
    proc = Process("t", pid, Terminal(master), init=False)
    assert proc.tty and proc.resize(24, 80)
    proc.write(b"in\n")
    out = b""
    start = time.monotonic()
    while chunk := proc.read(True, 100):
        out += chunk
    assert out == b"in\r\nx=in\r\nbye\r\n"
    assert time.monotonic() - start < 2 * TERMINAL_DRAIN_S + 1  # not the sleep's 5 s
    assert proc.wait(5) and proc.status == 0
    proc.close()
    assert not proc.resize(24, 80) and proc.read(False, 10) == b""
