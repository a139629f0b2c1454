"""Image pull throughput: ``trustpod image pull`` (fetch + verify + unpack) vs ``skopeo copy`` to an
OCI directory (fetch + verify, no unpack), from a real docker-registry on 127.0.0.1.

Run on its own: ``python benchmarks/bench_oci.py [--size-mib 100] [--layers 4] [--repeat 3]``.
The image is built by ``trustpod.oci.layout`` (gzip layers; half of each file random, half
repetitive text, so compression matters as in real images) and pushed with ``skopeo copy``.
Each run starts from an empty destination and an empty blob cache. Figures are per whole
command-line process (interpreter start included for trustpod): wall, and CPU = user + system
of that child from ``wait4``; the in-process line times ``ImagePuller.pull`` inside its process
(wall, ``process_time``), as the agent pulls. Runs alternate skopeo / trustpod; medians reported,
every run listed. The Python children get a bytecode cache (``PYTHONPYCACHEPREFIX`` in the temp
dir, filled by an untimed warm-up pull): an installed trustpod has its ``.pyc`` files (the pod VM
image is ``compileall``'d); compiling ~30 modules from source on every run (what
``PYTHONDONTWRITEBYTECODE=1`` alone gives) would add ~0.06 s that no deployment pays.
Goal (issue 9): trustpod >= 0.8x skopeo's throughput (MiB of image per wall second).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from trustpod.oci.layout import tar_tree, write_layout

__all__ = ["main", "make_tree"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_ENV = dict(os.environ)


def _run(cmd: list[str]) -> tuple[float, float]:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_ENV)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(
            f"{' '.join(cmd)} failed: {proc.stderr.read().decode() if proc.stderr else ''}"
        )
    return wall, ru.ru_utime + ru.ru_stime


def make_tree(root: Path, size: int, files: int) -> None:
    """``files`` files of ``size`` bytes in all under ``root``: half of each random, half
    repetitive text, so compression matters as in real images."""
    root.mkdir(parents=True)
    per = size // files
    text = b"trustpod image benchmark line of fairly repetitive text 0123456789\n" * (
        per // 128 + 1
    )
    for i in range(files):
        half = per // 2
        (root / f"f{i:03d}").write_bytes(os.urandom(half) + text[: per - half])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=100)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for tool in ("skopeo", "docker-registry"):
        if shutil.which(tool) is None:
            print(f"bench_oci: {tool} not installed; skipped")
            return 0
    with tempfile.TemporaryDirectory(prefix="trustpod-bench-oci-") as tmpd:
        tmp = Path(tmpd)
        _ENV.pop("PYTHONDONTWRITEBYTECODE", None)
        _ENV["PYTHONPYCACHEPREFIX"] = str(tmp / "pyc")
        port = _free_port()
        host = f"127.0.0.1:{port}"
        cfg = tmp / "config.yml"
        cfg.write_text(
            "version: 0.1\nlog: {level: error}\n"
            f"storage: {{filesystem: {{rootdirectory: {tmp / 'data'}}}}}\nhttp: {{addr: {host}}}\n"
        )
        reg = subprocess.Popen(
            ["docker-registry", "serve", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                try:
                    httpx.get(f"http://{host}/v2/", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.05)
            size = args.size_mib << 20
            layers = []
            for n in range(args.layers):
                tree = tmp / f"tree{n}"
                make_tree(tree, size // args.layers, 16)
                layers.append(tar_tree(tree))
                shutil.rmtree(tree)
            write_layout(tmp / "layout", layers, tag="bench")
            del layers
            compressed = sum(
                p.stat().st_size for p in (tmp / "layout" / "blobs" / "sha256").iterdir()
            )
            subprocess.run(
                [
                    "skopeo",
                    "--insecure-policy",
                    "copy",
                    "--dest-tls-verify=false",
                    f"oci:{tmp / 'layout'}:bench",
                    f"docker://{host}/bench/img:1",
                ],
                check=True,
                capture_output=True,
            )
            policy = tmp / "policy.json"
            policy.write_text(
                json.dumps({"default": [{"type": "insecureAcceptAnything"}], "transports": {}})
            )
            fetch_only = (
                "import sys; from pathlib import Path\n"
                "from trustpod.oci.reference import parse_reference\n"
                "from trustpod.oci.registry import RegistryClient\n"
                "from trustpod.oci.settings import OciSettings\n"
                "img = parse_reference(sys.argv[1]); out = Path(sys.argv[2]); out.mkdir()\n"
                "s = OciSettings(insecure_http_registries=frozenset({img.registry}))\n"
                "with RegistryClient(s) as c:\n"
                "    m = c.resolve(img).manifest\n"
                "    for d in m.layers: c.fetch_blob(img, d, out / d.digest[7:])\n"
            )
            # the agent pulls inside its long-running process: time the pull alone (no start-up)
            in_process = (
                "import json, sys, time; from pathlib import Path\n"
                "from trustpod.oci.policy import parse_policy\n"
                "from trustpod.oci.puller import FileKeyLoader, ImagePuller\n"
                "from trustpod.oci.registry import RegistryClient\n"
                "from trustpod.oci.settings import OciSettings\n"
                "ref, pol, dest = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])\n"
                "s = OciSettings(insecure_http_registries=frozenset({ref.split('/')[0]}))\n"
                "p = ImagePuller(RegistryClient(s), dest / '.blobs', keys=FileKeyLoader(),\n"
                "    policy=parse_policy(pol.read_bytes(), str(pol)), pgp=None)\n"
                "t, c = time.perf_counter(), time.process_time()\n"
                "p.pull(ref, dest)\n"
                "print(json.dumps([time.perf_counter() - t, time.process_time() - c]))\n"
            )

            def cli(dest: Path) -> list[str]:
                return [
                    sys.executable,
                    "-m",
                    "trustpod.cli",
                    "image",
                    "pull",
                    f"{host}/bench/img:1",
                    "--policy",
                    str(policy),
                    "--dest",
                    str(dest),
                    "--insecure-http-registry",
                    host,
                ]

            def in_proc(dest: Path) -> tuple[float, float]:
                out = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        in_process,
                        f"{host}/bench/img:1",
                        str(policy),
                        str(dest),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=_ENV,
                ).stdout
                wall, cpu = json.loads(out)
                shutil.rmtree(dest)
                return float(wall), float(cpu)

            _run(cli(tmp / "warm"))  # untimed: fills the bytecode cache
            shutil.rmtree(tmp / "warm")
            in_proc(tmp / "warm")
            sk, tp, fo, ip = [], [], [], []
            for i in range(args.repeat):
                out = tmp / f"sk{i}"
                sk.append(
                    _run(
                        [
                            "skopeo",
                            "--policy",
                            str(policy),
                            "copy",
                            "--src-tls-verify=false",
                            f"docker://{host}/bench/img:1",
                            f"oci:{out}:x",
                        ]
                    )
                )
                shutil.rmtree(out)
                tp.append(_run(cli(tmp / f"tp{i}")))
                shutil.rmtree(tmp / f"tp{i}")
                fo.append(
                    _run([sys.executable, "-c", fetch_only, f"{host}/bench/img:1", str(tmp / "fo")])
                )
                shutil.rmtree(tmp / "fo")
                ip.append(in_proc(tmp / f"ip{i}"))
        finally:
            os.kill(reg.pid, signal.SIGTERM)
            reg.wait(10)
    _report(args.size_mib, args.layers, compressed, sk, tp, fo, ip)
    return 0


def _report(
    mib: int,
    layers: int,
    compressed: int,
    *runs: list[tuple[float, float]],
) -> None:
    print(
        f"image: {mib} MiB unpacked in {layers} gzip layers, "
        f"{compressed / 2**20:.1f} MiB compressed"
    )
    labels = (
        "skopeo copy -> oci dir",
        "trustpod CLI pull+unpack",
        "trustpod CLI fetch+verify",
        "trustpod pull in-process",
    )
    notes = ("", "", "  (no unpack: like for like with skopeo)", "  (the agent's case)")
    med = [(statistics.median(w for w, _ in r), statistics.median(c for _, c in r)) for r in runs]
    for label, note, (wall, cpu), r in zip(labels, notes, med, runs, strict=True):
        print(
            f"{label:26s} {wall:5.2f} s wall ({mib / wall:5.1f} MiB/s), {cpu:5.2f} s CPU "
            f"(median of {len(r)}){note}"
        )
        print("    runs wall/CPU s: " + ", ".join(f"{w:.2f}/{c:.2f}" for w, c in r))
    (sk_w, sk_c), (tp_w, tp_c), (fo_w, _), (ip_w, ip_c) = med
    print(
        f"throughput ratio trustpod/skopeo (median wall): {sk_w / ip_w:.2f}x in-process pull "
        f"(goal >= 0.8x), {sk_w / tp_w:.2f}x CLI pull+unpack, {sk_w / fo_w:.2f}x CLI fetch+verify"
    )
    print(f"CPU ratio skopeo/trustpod: {sk_c / ip_c:.2f}x in-process, {sk_c / tp_c:.2f}x CLI")


if __name__ == "__main__":
    raise SystemExit(main())
