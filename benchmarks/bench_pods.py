"""``trustpod pod`` on the sandbox provider: time to the first log line, and N pods at once.

Run: ``python benchmarks/bench_pods.py [--runs 3] [--concurrent 20]`` (root, runc, swtpm,
busybox-static). A KBS over TLS (built-in attestation service, trusting the emulated vendor
chain) releases a sealed env secret; each pod is one busybox container that prints it.

- **first log line**: wall time from ``run_pod`` (the library under ``trustpod pod run``) to
  the container's first line in the pod store, split into the runner's steps (initdata, create
  pod VM, wait for the agent = VM boot + AA/CDH start + attestation + initdata binding, pause
  container, pull + CreateContainer incl. unsealing, StartContainer, log pump → first line);
  goal < 5 s. Images come from the pod VM image (``local_images``): no registry pull here
  (``make demo`` shows a signed registry pull: ~0.3 s for busybox).
- **concurrent**: N pods started from N threads at once; wall time until every pod's first
  line, the per-pod p50/max, CPU (user+sys of this process tree, from ``os.times`` of the
  children), then delete all and check no pod VM process, swtpm or mount is left.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from agent_support import IMAGE  # noqa: E402
from pod_support import SECRET, PodEnv, pod_env  # noqa: E402
from trustpod.pod.runner import RunOptions, delete_pod, run_pod  # noqa: E402
from trustpod.pod.spec import parse_pod  # noqa: E402
from trustpod.pod.wiring import load_config, make_provider, make_store  # noqa: E402


def _pod(e: PodEnv, name: str) -> str:
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n"
        f"  - name: app\n    image: {IMAGE}\n    command: [sh, -c, 'echo got=$S; sleep 600']\n"
        f"    env: [{{name: S, value: '{e.sealed_env}'}}]\n"
    )


def _first_line(store: object, name: str, deadline_s: float = 60.0) -> float:
    path = store.log_path(name, "app")  # type: ignore[attr-defined]
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if SECRET in path.read_bytes():
                return time.monotonic()
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"pod {name}: no first line in {deadline_s} s")


def one(e: PodEnv, name: str) -> dict[str, float]:
    cfg = load_config(e.config)
    store = make_store(cfg)
    provider = make_provider("sandbox", cfg, store)
    steps: dict[str, float] = {}

    def step(label: str, seconds: float) -> None:
        if seconds:
            key = label.split(":")[1].strip().split(" ")[0] if label.startswith("app:") else label
            steps[key] = seconds

    t0 = time.monotonic()
    opts = RunOptions(kbs_url=e.url, kbs_cert=e.ca_pem.read_text())
    run_pod(parse_pod(_pod(e, name)), provider, store, opts, step)
    t_run = time.monotonic()
    t_line = _first_line(store, name)
    steps["log pump -> first line"] = t_line - t_run
    steps["TOTAL"] = t_line - t0
    delete_pod(store, provider, name)
    return steps


def leftovers(marker: str) -> list[str]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd:
                out.append(cmd[:120])
    out += [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if marker in m]
    return out


def concurrent(e: PodEnv, n: int) -> dict[str, float]:
    cfg = load_config(e.config)
    store = make_store(cfg)
    provider = make_provider("sandbox", cfg, store)
    times: dict[str, float] = {}
    errors: list[str] = []
    t0 = time.monotonic()
    c0 = os.times()

    def start(i: int) -> None:
        name = f"c{i}"
        try:
            opts = RunOptions(kbs_url=e.url, kbs_cert=e.ca_pem.read_text(), agent_timeout_s=120)
            run_pod(parse_pod(_pod(e, name)), provider, store, opts, lambda *_: None)
            times[name] = _first_line(store, name, 120) - t0
        except Exception as exc:
            errors.append(f"{name}: {exc}")

    threads = [threading.Thread(target=start, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    c1 = os.times()
    cpu = (c1.children_user + c1.children_system + c1.user + c1.system) - (
        c0.children_user + c0.children_system + c0.user + c0.system
    )
    running = len(list(store.list()))
    t_del = time.monotonic()
    for r in list(store.list()):
        delete_pod(store, provider, r.name)
    del_s = time.monotonic() - t_del
    left = leftovers(str(store.root / ".vms"))
    for err in errors:
        print("   ", err)
    vals = sorted(times.values()) or [0.0]
    return {
        "pods": n,
        "running": running,
        "failed": len(errors),
        "wall_s": wall,
        "p50_s": statistics.median(vals),
        "max_s": vals[-1],
        "cpu_s_host_side": cpu,
        "delete_all_s": del_s,
        "leftovers": len(left),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrent", type=int, default=20)
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="bench-pods-") as tmp, pod_env(Path(tmp)) as e:
        runs = [one(e, f"b{i}") for i in range(args.runs)]
        print(f"pod run -> first log line, sandbox provider ({args.runs} runs, median; ms):")
        for key in runs[0]:
            vals = [r.get(key, 0.0) for r in runs]
            print(f"  {key:55} {statistics.median(vals) * 1000:8.0f}")
        if args.concurrent:
            res = concurrent(e, args.concurrent)
            print(f"{args.concurrent} pods started concurrently:")
            for k, v in res.items():
                print(f"  {k:20} {v:.2f}" if isinstance(v, float) else f"  {k:20} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
