"""``make bench``: KBS throughput (full RCAR flows/s, p50/p99, resource GETs/s with a token).

Starts ``trustpod kbs serve`` with K worker processes on one SQLite file (from ``trustpod kbs
init``), provisions a secret and the sample reference values, then:
1. N concurrent clients loop auth -> attest -> get-resource (sample TEE) for --seconds;
2. ``wrk`` (if installed, else the Python generator) hammers the resource GET with a Bearer token.
``--profile`` runs a single worker under cProfile and prints the top functions.
3. the pinned benchmark (``benchmarks/kbs_pinned.py``: one worker on core 0, the generator on
   core 1, a custom Rego resource policy, sample and emulated az-snp-vtpm evidence, server CPU
   ms/flow from ``/proc``); ``--no-pinned`` leaves it out.
4. the pod agent's figures (issue 9): ``bench_agent_policy`` (policy decision per RPC),
   ``bench_oci`` (pull + unpack vs ``skopeo copy``) and ``bench_agent`` (RSS, ttRPC, runc);
   ``--no-agent`` leaves them out.
``--all`` also runs the other benchmarks in this directory (``bench_*.py``); ``--replicas`` runs
only ``bench_replicas.py`` (1/2/3 replicas on PostgreSQL and Redis) after the main figures.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.kbs_load import Conn, provision, run_flows

RESOURCE = "default/bench/key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _flows_worker(args: tuple[str, int, float, str | None]) -> tuple[list[float], int, str]:
    url, clients, seconds, cafile = args
    st = run_flows(url, clients, seconds, RESOURCE, cafile)
    return st.latencies, st.errors, st.first_error


def _token(url: str, cafile: str | None) -> str:
    import asyncio
    import ssl

    from benchmarks.kbs_load import attest_token

    async def go() -> str:
        ctx = ssl.create_default_context(cafile=cafile) if cafile else None
        conn = await Conn.open(url, ctx)
        try:
            return await attest_token(conn)
        except RuntimeError as exc:
            raise SystemExit(f"attest failed: {exc}") from exc
        finally:
            conn.close()

    return asyncio.run(go())


def _wrk(url: str, token: str, seconds: float, conns: int) -> tuple[float, str]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{int(seconds)}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {token}",
            f"{url}/kbs/v0/resource/{RESOURCE}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if "Non-2xx" in out:
        raise SystemExit("resource GETs failed:\n" + out)
    return (float(m.group(1)) if m else 0.0), out


def _start(cfg: Path, workers: int, profile: Path | None, stub: bool) -> subprocess.Popen[bytes]:
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    if stub:
        cmd += ["-m", "benchmarks.stub_server", str(cfg), str(workers)]
    else:
        cmd += ["-m", "trustpod.cli", "kbs", "serve", "--config", str(cfg)]
        cmd += ["--workers", str(workers)]
    return subprocess.Popen(cmd)


def _wait(url: str, cafile: str | None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", verify=cafile or True, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("KBS did not start")


def kbs_bench(args: argparse.Namespace) -> dict[str, float]:
    from trustpod.kbs.init_dir import init_kbs_dir

    tmp = Path(tempfile.mkdtemp(prefix="trustpod-bench-"))
    listen = f"127.0.0.1:{_free_port()}"
    res = init_kbs_dir(tmp, listen, insecure_http=not args.tls)
    cafile = str(res.certificate) if res.certificate else None
    profile = tmp / "server.prof" if args.profile else None
    workers = 1 if args.profile else args.workers
    proc = _start(res.config, workers, profile, args.stub_as)
    try:
        _wait(res.url, cafile)
        provision(res.url, res.admin_token.read_text().strip(), RESOURCE, verify=cafile or True)
        per = max(1, args.clients // args.load_procs)
        jobs = [(res.url, per, args.seconds, cafile)] * args.load_procs
        t0 = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(args.load_procs) as pool:
            parts = pool.map(_flows_worker, jobs)
        wall = time.perf_counter() - t0 - 0.0
        lat = [x for p in parts for x in p[0]]
        errors = sum(p[1] for p in parts)
        if errors:
            print(f"flow errors: {errors}; first: {next(p[2] for p in parts if p[2])}")
        flows_s = len(lat) / args.seconds
        token = _token(res.url, cafile)
        if shutil.which("wrk"):
            gets, _ = _wrk(res.url, token, args.seconds, args.clients)
        else:
            gets = float("nan")
        out = {
            "flows_per_s": flows_s,
            "p50_ms": _pct(lat, 0.5) * 1000,
            "p99_ms": _pct(lat, 0.99) * 1000,
            "gets_per_s": gets,
            "flows": float(len(lat)),
            "errors": float(errors),
            "wall_s": wall,
        }
    finally:
        proc.send_signal(2)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    if profile is not None and profile.exists():
        import pstats

        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(45)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


#: Run by plain ``make bench`` after the KBS figures (issue 9's agent goals).
AGENT_BENCHES = ("bench_agent_policy", "bench_oci", "bench_agent")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workers", type=int, default=2, help="KBS worker processes (K)")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (N)")
    p.add_argument("--load-procs", type=int, default=2, help="load-generator processes")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--tls", action="store_true", help="HTTPS with the generated certificate")
    p.add_argument("--profile", action="store_true", help="one worker under cProfile")
    p.add_argument("--all", action="store_true", help="also run benchmarks/bench_*.py")
    p.add_argument(
        "--replicas",
        action="store_true",
        help="also 1/2/3 KBS replicas on PostgreSQL and Redis (benchmarks/bench_replicas.py)",
    )
    p.add_argument(
        "--no-pinned",
        action="store_true",
        help="skip the pinned one-core benchmark (benchmarks/kbs_pinned.py)",
    )
    p.add_argument(
        "--no-agent",
        action="store_true",
        help="skip the pod agent benchmarks (policy decisions, image pull, RSS)",
    )
    p.add_argument(
        "--stub-as",
        action="store_true",
        help="KBS layer only: a stub attestation service (benchmarks/stub_server.py)",
    )
    args = p.parse_args()
    py = platform.python_version()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {py}")
    r = kbs_bench(args)
    print(
        f"KBS K={args.workers} N={args.clients} tls={args.tls} stub_as={args.stub_as}: "
        f"{r['flows_per_s']:.0f} full flows/s (p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
        f"{int(r['flows'])} flows, {int(r['errors'])} errors); "
        f"resource GET with token: {r['gets_per_s']:.0f} req/s"
    )
    if not args.no_pinned:
        from benchmarks import kbs_pinned

        kbs_pinned.main(seconds=min(args.seconds, 6.0))
    root = Path(__file__).resolve().parents[1]
    if not args.no_agent and not args.all:
        for stem in AGENT_BENCHES:
            print(f"--- {stem}.py")
            subprocess.run([sys.executable, "-m", f"benchmarks.{stem}"], check=False, cwd=root)
    if args.replicas and not args.all:
        from benchmarks import bench_replicas

        bench_replicas.main([])
    if args.all:
        for bench in sorted(Path(__file__).parent.glob("bench_*.py")):
            print(f"--- {bench.name}")
            # as modules from the repository root: some import shared code from benchmarks.*
            mod = f"benchmarks.{bench.stem}"
            subprocess.run([sys.executable, "-m", mod], check=False, cwd=root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
