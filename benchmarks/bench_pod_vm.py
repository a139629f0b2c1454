"""Pod VM image under QEMU TCG: cold and cached ``trustpod image build --bootable`` wall time,
and boot timings of the image (host wall time from qemu start to the guest's markers).

Run: ``python benchmarks/bench_pod_vm.py [--cold] [--boots 3]``. ``--cold`` builds once more
with an empty cache in a temporary directory (mmdebstrap, pip, mksquashfs: minutes); without
it the cached build is timed against the normal cache (the first run fills it). Boot markers
come from the serial console: the initramfs' ``root verified`` line (all of the root hashed
by the kernel's dm-verity), ``trustpod-init: up`` (the verified root's init running, with the
guest's uptime) and the guest's python3 having started once. ``--pods N`` then runs
``make demo-vm``'s attested pod N times on the cached image (KBS over TLS, registry,
az-snp-vtpm from the VM's vTPM, sealed secret) and reports its step times: VM create (boot to
agent serving), image pull, ``pod run`` total and run → the secret's log line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from trustpod.image.qemu import QemuConfig, qemu_argv


def _build(out: Path, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "trustpod.cli", "image", "build", "--bootable", "--out", str(out)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - t0


_MARKERS = {
    "verified": "trustpod-initramfs: root verified",
    "init": "trustpod-init: up",
    "poweroff": "trustpod-init: powering off",
}


def _boot(image: Path, console: Path) -> dict[str, float]:
    info = json.loads((image / "vm.json").read_text())
    cfg = QemuConfig(
        image / "vmlinuz", image / "initrd.img", image / "disk.raw", info["cmdline"], console
    )
    seen: dict[str, float] = {}
    t0 = time.monotonic()
    proc = subprocess.Popen(qemu_argv(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            text = console.read_text(errors="replace") if console.exists() else ""
            now = time.monotonic() - t0
            for key, marker in _MARKERS.items():
                if key not in seen and marker in text:
                    seen[key] = now
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    proc.wait(timeout=300)
    time.sleep(0.2)
    done.set()
    thread.join()
    seen["exit"] = time.monotonic() - t0
    m = re.search(r"trustpod-init: up in ([0-9.]+) s", console.read_text(errors="replace"))
    if m:
        seen["guest_uptime_at_init"] = float(m.group(1))
    return seen


_STEP = re.compile(r"^\[\d+\] (.*?) \.\.\.\n(?:    \|.*\n)*    ok \(([0-9.]+) ms\)", re.M)
_POD_LINE = re.compile(r"^    \| (\d+) ms  (.*)$", re.M)


def _attested_pod(image: Path) -> dict[str, float]:
    env = dict(os.environ, TRUSTPOD_POD_VM_IMAGE=str(image))
    r = subprocess.run(
        [sys.executable, "-m", "trustpod.pod.demo_vm"],
        env=env, capture_output=True, text=True, timeout=900, check=True,
    )  # fmt: skip
    steps = {title: float(ms) / 1000 for title, ms in _STEP.findall(r.stdout)}
    run = next(v for k, v in steps.items() if k.startswith("trustpod pod run"))
    logs = next(v for k, v in steps.items() if k.startswith("trustpod pod logs demo-vm-pod"))
    lines = {label: float(ms) / 1000 for ms, label in _POD_LINE.findall(r.stdout)}
    pull = next((v for k, v in lines.items() if ": pull " in k), 0.0)
    create = lines.get("create pod VM (qemu)", 0.0)
    return {"create_vm": create, "pull": pull, "pod_run": run, "run_to_secret": run + logs}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cold", action="store_true", help="also a build with an empty cache")
    p.add_argument("--boots", type=int, default=3)
    p.add_argument("--pods", type=int, default=1, help="attested demo-vm pod runs (0: none)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-podvm-") as tmp:
        base = Path(tmp)
        env = dict(os.environ)
        warm = _build(base / "first", env)
        cached = _build(base / "img", env)
        print(f"build (first run against the normal cache): {warm:7.1f} s")
        print(f"build, cached by input digest:              {cached:7.1f} s")
        if args.cold:
            cold = _build(base / "cold", dict(env, TRUSTPOD_CACHE=str(base / "cache")))
            print(f"build, cold (empty cache):                  {cold:7.1f} s")
        runs = [_boot(base / "img", base / f"console{i}.log") for i in range(args.boots)]
        print(f"boots under TCG (median of {len(runs)}; host wall seconds from qemu start):")
        for key in (*_MARKERS, "exit", "guest_uptime_at_init"):
            vals = [r[key] for r in runs if key in r]
            if vals:
                print(f"  {key:22s} {statistics.median(vals):6.2f} s")
        if args.pods:
            pods = [_attested_pod(base / "img") for _ in range(args.pods)]
            print(f"attested pod in the VM (median of {len(pods)}; make demo-vm's steps):")
            for key in pods[0]:
                print(f"  {key:22s} {statistics.median(p[key] for p in pods):6.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
