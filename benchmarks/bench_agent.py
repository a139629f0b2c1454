"""The pod agent (``trustpod agent serve``): RSS, ttRPC call cost, container create/start/exec.

Run on its own: ``python benchmarks/bench_agent.py [--calls 3000] [--containers 4]`` (root, runc
and busybox-static needed). The agent runs as a child process with the sample TEE and the
initdata's allow-all policy (so every call includes a regorus policy decision); no KBS is
contacted (no credentials, no sealed secrets). Figures:

- RSS (VmRSS) of the agent process idle, and after the pause + N busybox containers run, and
  its peak (VmHWM) — goal < 80 MiB;
- ttRPC round trips of GetGuestDetails on one connection (sequential) and on 4 connections in
  4 threads; CPU per call is the agent process's user+system time (from /proc/PID/stat)
  divided by the calls, next to the calls/s;
- wall time of CreateContainer+StartContainer per container, and of an exec round trip
  (ExecProcess → ReadStdout to EOF → WaitProcess).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from agent_support import (  # noqa: E402
    IMAGE,
    busybox_rootfs,
    container_request,
    free_port,
)
from trustpod.agent.client import AgentClient  # noqa: E402
from trustpod.agent.pb import protos  # noqa: E402
from trustpod.agent.policy_defaults import ALLOW_ALL  # noqa: E402
from trustpod.cli.initdata import build_initdata  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0]) // 1024
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--containers", type=int, default=4)
    args = p.parse_args()
    if shutil.which("runc") is None or os.geteuid() != 0:
        print("skipped: needs root and runc (apt install runc busybox-static)")
        return 0
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    pb = protos()
    try:
        d = tmp / "guest"
        d.mkdir()
        (tmp / "keys").mkdir()
        (d / "initdata.toml").write_text(
            build_initdata("https://127.0.0.1:1", kbs_cert=None, policy=ALLOW_ALL)
        )
        (d / "guest.toml").write_text(
            f'attester = "sample"\nkey_dir = "{tmp / "keys"}"\n'
            f'api_listen = "127.0.0.1:{free_port()}"\n'
        )
        busybox_rootfs(d / "pause" / "rootfs", pause=True)
        images = tmp / "images"
        busybox_rootfs(images / IMAGE.replace("/", "_").replace(":", "_"))
        sock = tmp / "agent.sock"
        argv = [sys.executable, "-m", "trustpod.cli", "agent", "serve", "--config-dir", str(d)]
        argv += ["--local-images", str(images), "--listen", f"unix:{sock}"]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        addr = ready["agent"][0]
        time.sleep(0.5)
        idle = _status(proc.pid)
        with AgentClient(addr) as agent:
            req = pb.grpc.GuestDetailsRequest()
            for _ in range(100):
                agent.call("GetGuestDetails", req)
            cpu0, t0 = _cpu_s(proc.pid), time.perf_counter()
            for _ in range(args.calls):
                agent.call("GetGuestDetails", req)
            seq_wall, seq_cpu = time.perf_counter() - t0, _cpu_s(proc.pid) - cpu0

            def worker() -> None:
                with AgentClient(addr) as c:
                    for _ in range(args.calls // 4):
                        c.call("GetGuestDetails", req)

            cpu0, t0 = _cpu_s(proc.pid), time.perf_counter()
            threads = [threading.Thread(target=worker) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            par_wall, par_cpu = time.perf_counter() - t0, _cpu_s(proc.pid) - cpu0
            par_calls = 4 * (args.calls // 4)

            starts = []
            agent.call("CreateContainer", container_request(pb, "pause", ["/pause"], sandbox=True))
            agent.call("StartContainer", pb.grpc.StartContainerRequest(container_id="pause"))
            for i in range(args.containers):
                cid = f"c{i}"
                t0 = time.perf_counter()
                agent.call("CreateContainer", container_request(pb, cid, ["sleep", "3600"]))
                agent.call("StartContainer", pb.grpc.StartContainerRequest(container_id=cid))
                starts.append(time.perf_counter() - t0)
            execs = []
            for i in range(10):
                proc_spec = pb.grpc.Process(Args=["/bin/echo", "hi"], Cwd="/")
                eid = f"e{i}"
                t0 = time.perf_counter()
                agent.call(
                    "ExecProcess",
                    pb.grpc.ExecProcessRequest(container_id="c0", exec_id=eid, process=proc_spec),
                )
                while agent.call(
                    "ReadStdout",
                    pb.grpc.ReadStreamRequest(container_id="c0", exec_id=eid, len=1024),
                ).data:
                    pass
                agent.call(
                    "WaitProcess", pb.grpc.WaitProcessRequest(container_id="c0", exec_id=eid)
                )
                execs.append(time.perf_counter() - t0)
            busy = _status(proc.pid)
            for cid in ["pause"] + [f"c{i}" for i in range(args.containers)]:
                agent.call("RemoveContainer", pb.grpc.RemoveContainerRequest(container_id=cid))
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        print(
            f"agent RSS: idle {idle['VmRSS']} MiB, with pause + {args.containers} containers "
            f"{busy['VmRSS']} MiB, peak {busy['VmHWM']} MiB (goal < 80 MiB)"
        )
        print(
            f"ttRPC GetGuestDetails (policy decision included), 1 connection: "
            f"{args.calls / seq_wall:.0f} calls/s, {seq_wall / args.calls * 1e6:.0f} µs/call, "
            f"agent CPU {seq_cpu / args.calls * 1e6:.0f} µs/call"
        )
        print(
            f"ttRPC GetGuestDetails, 4 connections x 4 threads: "
            f"{par_calls / par_wall:.0f} calls/s, "
            f"agent CPU {par_cpu / par_calls * 1e6:.0f} µs/call"
        )
        print(
            f"container create+start (runc): median {statistics.median(starts) * 1000:.0f} ms; "
            f"exec round trip: median {statistics.median(execs) * 1000:.0f} ms"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
