"""Image pull throughput: ``trustpod image pull`` (fetch + verify + unpack) vs ``skopeo copy`` to an
OCI directory (fetch + verify, no unpack), from a real docker-registry on 127.0.0.1.

Run on its own: ``python benchmarks/bench_oci.py [--size-mib 100] [--layers 4] [--repeat 3]``.
The image is built by ``trustpod.oci.layout`` (gzip layers; half of each file random, half
repetitive text, so compression matters as in real images) and pushed with ``skopeo copy``.
Each run starts from an empty destination and an empty blob cache. Figures are per whole
command-line process (interpreter start included for trustpod): wall, and CPU = user + system
of that child from ``wait4``; the in-process line times ``ImagePuller.pull`` inside its process
(wall, ``process_time``), as the agent pulls. Runs alternate skopeo / trustpod; medians reported.
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


def _run(cmd: list[str]) -> tuple[float, float]:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
                dest = tmp / f"tp{i}"
                tp.append(
                    _run(
                        [
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
                    )
                )
                shutil.rmtree(dest)
                fo.append(
                    _run([sys.executable, "-c", fetch_only, f"{host}/bench/img:1", str(tmp / "fo")])
                )
                shutil.rmtree(tmp / "fo")
                out_ip = subprocess.run(
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
                ).stdout
                wall_ip, cpu_ip = json.loads(out_ip)
                ip.append((float(wall_ip), float(cpu_ip)))
                shutil.rmtree(dest)
        finally:
            os.kill(reg.pid, signal.SIGTERM)
            reg.wait(10)
    mib = args.size_mib
    sk_wall, tp_wall = statistics.median(w for w, _ in sk), statistics.median(w for w, _ in tp)
    sk_cpu, tp_cpu = statistics.median(c for _, c in sk), statistics.median(c for _, c in tp)
    print(
        f"image: {mib} MiB unpacked in {args.layers} gzip layers, "
        f"{compressed / 2**20:.1f} MiB compressed"
    )
    print(
        f"skopeo copy -> oci dir:  {sk_wall:6.2f} s wall ({mib / sk_wall:6.1f} MiB/s), "
        f"{sk_cpu:5.2f} s CPU"
    )
    print(
        f"trustpod pull + unpack:  {tp_wall:6.2f} s wall ({mib / tp_wall:6.1f} MiB/s), "
        f"{tp_cpu:5.2f} s CPU"
    )
    fo_wall, fo_cpu = statistics.median(w for w, _ in fo), statistics.median(c for _, c in fo)
    print(
        f"trustpod fetch+verify:   {fo_wall:6.2f} s wall ({mib / fo_wall:6.1f} MiB/s), "
        f"{fo_cpu:5.2f} s CPU  (no unpack: like for like with skopeo)"
    )
    ip_wall, ip_cpu = statistics.median(w for w, _ in ip), statistics.median(c for _, c in ip)
    print(
        f"trustpod pull in-process:{ip_wall:6.2f} s wall ({mib / ip_wall:6.1f} MiB/s), "
        f"{ip_cpu:5.2f} s CPU  (the agent's case: no interpreter start or imports)"
    )
    print(
        f"throughput ratio trustpod/skopeo: {sk_wall / tp_wall:.2f}x pull+unpack (goal >= 0.8x), "
        f"{sk_wall / fo_wall:.2f}x fetch+verify only, {sk_wall / ip_wall:.2f}x in-process pull"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
