"""Agent policy decision time per RPC (goal < 100 us) with a genpolicy-size policy.

Run: ``.venv/bin/python -m benchmarks.bench_agent_policy [N]``. The policy is ``trustpod policy
generate`` output for a pod of 16 containers with 40 long (CUDA-like) env values each: ~1 900
lines, ~180 KB, the size of genpolicy's output (its rules.rego alone is 1 800 lines). Each figure
is the full gate path the agent runs: protobuf message -> kata serde JSON -> regorus -> decision
(+ JSON-patch state), best of 5 rounds, wall and CPU microseconds per RPC, one thread.

CreateContainer/RemoveContainer change the state. kata's clear-and-add of the data document makes
regorus re-prepare the whole policy after each change (~1 ms here); trustpod reads ``data.pstate``
through an extension instead (ADR 0960), and the pair is also timed with that turned off
(``externalize_state=False``) for comparison. The ``serde`` lines time the protobuf -> kata serde
conversion alone (part of every figure above them); the rest is regorus.

With ``TRUSTPOD_KATA_SRC`` pointing at a kata-containers checkout it also times genpolicy's own
``rules.rego`` with its settings-derived ``policy_data``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.timing import best_us_per_call
from trustpod.agent.pb import protos
from trustpod.agent.policy import KataPolicyGate, policy_input
from trustpod.agent.policy_engine import PolicySettings
from trustpod.agent.policy_gen import GeneratorSettings, generate_policy, parse_pod

DIGEST = "sha256:" + "ab" * 32
CONTAINERS = 16
ENV_PER_CONTAINER = 40


def _pod() -> str:
    lines = ["kind: Pod", "metadata: {name: bench, namespace: default}", "spec:", "  containers:"]
    for i in range(CONTAINERS):
        lines += [
            f"  - name: c{i}",
            f"    image: registry.example/bench/c{i}@{DIGEST}",
            f'    command: ["/bin/app{i}", "--serve"]',
            "    livenessProbe: {exec: {command: [/bin/health]}}",
            "    env:",
        ]
        lines += [
            f"    - {{name: VAR_{j}, value: '{'cuda>=12.0 brand=tesla,driver>=470 ' * 6}{j}'}}"
            for j in range(ENV_PER_CONTAINER)
        ]
    return "\n".join(lines) + "\n"


def bench(name: str, fn: Callable[[], object], n: int) -> None:
    wall, cpu = best_us_per_call(fn, n)
    print(f"{name:<62} {wall:8.1f} us/RPC  (CPU {cpu:7.1f} us)")


def _create_request(pb: Any, cid: str, last: int) -> Any:
    req = pb.CreateContainerRequest(container_id=cid, exec_id=cid)
    anno = req.OCI.Annotations
    anno["io.kubernetes.cri.container-type"] = "container"
    anno["io.kubernetes.cri.container-name"] = f"c{last}"
    anno["io.kubernetes.cri.sandbox-name"] = "bench"
    anno["io.kubernetes.cri.sandbox-namespace"] = "default"
    anno["io.kubernetes.cri.image-name"] = f"registry.example/bench/c{last}@{DIGEST}"
    req.OCI.Version = "1.1.0"
    req.OCI.Root.Path = f"/run/kata-containers/{cid}/rootfs"
    p = req.OCI.Process
    p.Args.extend([f"/bin/app{last}", "--serve"])
    p.Cwd = "/"
    p.User.SetInParent()  # UID 0, GID 0 (set, not null)
    p.Env.append("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    p.Env.extend(
        f"VAR_{j}={'cuda>=12.0 brand=tesla,driver>=470 ' * 6}{j}" for j in range(ENV_PER_CONTAINER)
    )
    p.Capabilities.Bounding.extend(["CAP_CHOWN", "CAP_KILL", "CAP_SETUID"])
    for ns in ("ipc", "uts", "mount"):
        req.OCI.Linux.Namespaces.add(Type=ns)
    m = req.OCI.Mounts.add(destination="/proc", source="proc", type="proc")
    m.options.extend(["nosuid", "noexec", "nodev"])
    s = req.storages.add(driver="image_guest_pull", source=anno["io.kubernetes.cri.image-name"])
    s.mount_point = f"/run/kata-containers/{cid}/rootfs"
    return req


def _generated(n: int) -> None:
    pb = protos().grpc
    text = generate_policy(parse_pod(_pod()), GeneratorSettings())
    print(f"generated policy: {text.count(chr(10))} lines, {len(text)} bytes")
    t0 = time.perf_counter()
    gate = KataPolicyGate(text)
    print(f"{'load policy (parse once per thread)':<62} {(time.perf_counter() - t0) * 1e3:8.2f} ms")
    last = CONTAINERS - 1
    counter = iter(range(10**9))
    kata_way = KataPolicyGate(text, settings=PolicySettings(externalize_state=False))

    def pair(g: KataPolicyGate) -> Callable[[], None]:
        def create_remove() -> None:
            cid = f"{next(counter):064x}"
            g.check("CreateContainerRequest", _create_request(pb, cid, last))
            g.check("RemoveContainerRequest", pb.RemoveContainerRequest(container_id=cid))

        return create_remove

    label = f"CreateContainer (container {CONTAINERS} of {CONTAINERS}) + RemoveContainer"
    bench(label, pair(gate), max(1, n // 10))
    bench("  the same, state in the engine's data (kata's clear-and-add)", pair(kata_way), n // 40)
    cid = "e" * 64
    one = _create_request(pb, cid, last)
    gate.check("CreateContainerRequest", one)
    bench(
        "  CreateContainer alone (denied: same id again)",
        lambda: gate.allows("CreateContainerRequest", one),
        n // 4,
    )
    bench(
        "  serde of that CreateContainerRequest",
        lambda: policy_input("CreateContainerRequest", one),
        n,
    )
    cid = "f" * 64
    gate.check("CreateContainerRequest", _create_request(pb, cid, last))
    ok = pb.ExecProcessRequest(container_id=cid, exec_id="e")
    ok.process.Args.append("/bin/health")
    ok.process.User.SetInParent()
    bad = pb.ExecProcessRequest(container_id=cid, exec_id="e")
    bad.process.Args.append("sh")

    def denied() -> None:
        try:
            gate.check("ExecProcessRequest", bad)
        except Exception:  # the denial is what is timed
            return None
        return None

    bench("ExecProcess, listed command (allowed)", lambda: gate.check("ExecProcessRequest", ok), n)
    bench("  serde of that ExecProcessRequest", lambda: policy_input("ExecProcessRequest", ok), n)
    bench("ExecProcess, other command (denied)", denied, n)
    stats = pb.StatsContainerRequest(container_id=cid)
    bench("StatsContainer (default true)", lambda: gate.check("StatsContainerRequest", stats), n)
    read = pb.ReadStreamRequest(container_id=cid, exec_id=cid, len=4096)
    bench("ReadStream (denied -> redacted)", lambda: gate.allows("ReadStreamRequest", read), n)


def _upstream(n: int) -> None:
    root = os.environ.get("TRUSTPOD_KATA_SRC")
    if not root or not (Path(root) / "src/tools/genpolicy/rules.rego").is_file():
        print("(set TRUSTPOD_KATA_SRC to a kata checkout to also time genpolicy's rules.rego)")
        return
    pb = protos().grpc
    gp = Path(root) / "src/tools/genpolicy"
    settings = json.loads((gp / "genpolicy-settings.json").read_text())
    keys = ("common", "sandbox", "request_defaults", "cluster_config")
    data = {"containers": [], **{k: settings[k] for k in keys}}
    text = (gp / "rules.rego").read_text() + "\npolicy_data := " + json.dumps(data, indent=2)
    gate = KataPolicyGate(text)
    print(f"genpolicy rules.rego + settings policy_data: {text.count(chr(10))} lines")
    path = "/run/kata-containers/shared/containers/" + "a" * 64 + "-0123456789abcdef-resolv.conf"
    cf = pb.CopyFileRequest(path=path, file_mode=0o100644)
    bench("upstream rules: CopyFile (allowed)", lambda: gate.check("CopyFileRequest", cf), n)
    stats = pb.StatsContainerRequest(container_id="c")
    bench("upstream rules: StatsContainer", lambda: gate.check("StatsContainerRequest", stats), n)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    _generated(n)
    _upstream(n)


if __name__ == "__main__":
    main()
