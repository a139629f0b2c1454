"""KBS replicas on a shared store: full RCAR flows/s with 1, 2 and 3 ``trustpod kbs serve``
replicas (one worker each, made by separate ``kbs init --storage-url --join`` runs) on PostgreSQL
and on Redis, started on 127.0.0.1 like the tests do. Clients are spread over the replicas
(``benchmarks.kbs_load``: auth -> attest -> resource per flow, sample TEE, keep-alive).

Besides flows/s it reports CPU per flow: of the KBS replicas together, of the store server, and
of the load generator, so it is plain what the number is limited by (on a 2-core machine: the
cores, which the replicas, the store and the load generator share).

``python -m benchmarks.bench_replicas [--seconds S] [--clients N] [--stores postgres,redis]``
(also run by ``make bench`` through ``benchmarks/run.py --replicas`` and ``--all``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchmarks.kbs_load import run_flows

RESOURCE = "default/bench/key"


def _cpu(pids: list[int]) -> dict[int, float]:
    """utime + stime (seconds) of each of these processes."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def _pg_pids(data_dir: Path) -> list[int]:
    """The postmaster and its backends (children of the postmaster)."""
    master = int((data_dir / "postmaster.pid").read_text().split()[0])
    out = [master]
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == master:
                out.append(int(d.name))
    return out


def _load(args: tuple[str, int, float]) -> tuple[int, int, str, float]:
    url, clients, seconds = args
    st = run_flows(url, clients, seconds, RESOURCE, None)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    return len(st.latencies), st.errors, st.first_error, cpu.ru_utime + cpu.ru_stime


def measure(
    store_url: str, store_pids: Callable[[], list[int]], n: int, clients: int, seconds: float
) -> dict[str, float]:
    from replica_support import init_replicas, provision_reference_values

    root = Path(tempfile.mkdtemp(prefix=f"trustpod-bench-rep{n}-"))
    replicas = init_replicas(root, n, store_url, tls=False)
    for r in replicas:
        r.start()
    try:
        for r in replicas:
            r.wait_ready(False)
        h = {"authorization": f"Bearer {replicas[0].admin_token}"}
        with httpx.Client(base_url=replicas[0].url, timeout=30) as c:
            assert (
                c.post(f"/kbs/v0/resource/{RESOURCE}", content=b"s", headers=h).status_code == 200
            )
            provision_reference_values(c, replicas[0].admin_token)
        kbs_pids = [r.proc.pid for r in replicas if r.proc is not None]
        kbs0, store0 = _cpu(kbs_pids), _cpu(store_pids())
        per = max(1, clients // n)
        jobs = [(r.url, per, seconds) for r in replicas]
        with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
            parts = pool.map(_load, jobs)
        flows = sum(p[0] for p in parts)
        errors = sum(p[1] for p in parts)
        if errors:
            print(f"  {errors} flow errors; first: {next(p[2] for p in parts if p[2])}")
        kbs_cpu = _cpu_delta(kbs0, _cpu(kbs_pids))
        store_cpu = _cpu_delta(store0, _cpu(store_pids()))
        load_cpu = sum(p[3] for p in parts)
    finally:
        for r in replicas:
            r.stop()
    per_flow = 1000 / max(flows, 1)
    return {
        "flows_per_s": flows / seconds,
        "errors": float(errors),
        "kbs_cpu_ms": kbs_cpu * per_flow,
        "store_cpu_ms": store_cpu * per_flow,
        "load_cpu_ms": load_cpu * per_flow,
        "cpu_busy": (kbs_cpu + store_cpu + load_cpu) / seconds / (os.cpu_count() or 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=12, help="concurrent clients in total")
    p.add_argument("--stores", default="postgres,redis")
    p.add_argument("--max-replicas", type=int, default=3)
    args = p.parse_args(argv)
    from storage_servers import Postgres, Redis

    print(
        f"replicas: {os.cpu_count()} cores, {args.clients} clients, "
        f"{args.seconds:.0f} s each, HTTP, one worker per replica; "
        f"load average before: {os.getloadavg()[0]:.1f} (other work on the machine competes)"
    )
    for kind in args.stores.split(","):
        pids: Callable[[], list[int]]
        if kind == "postgres":
            pg = Postgres()
            url = f"postgres://postgres@127.0.0.1:{pg.port}/bench"
            pids, close, label = partial(_pg_pids, pg.data), pg.close, f"PostgreSQL {pg.version}"
        else:
            rs = Redis(Path(tempfile.mkdtemp(prefix="trustpod-bench-redis-")))
            url, close, label = rs.url, rs.close, "Redis"
            pids = partial(list, [rs.proc.pid])
        try:
            for n in range(1, args.max_replicas + 1):
                # a fresh store per run (each run's replicas have their own at-rest key)
                if kind == "postgres":
                    import psycopg

                    with psycopg.connect(pg.conninfo, autocommit=True) as conn:
                        conn.execute(f"CREATE DATABASE bench{n}")
                    run_url = f"{url}{n}"
                else:
                    run_url = f"{url.rsplit('/', 1)[0]}/{n}"
                r = measure(run_url, pids, n, args.clients, args.seconds)
                print(
                    f"{label}, {n} replica(s): {r['flows_per_s']:.0f} flows/s, "
                    f"{int(r['errors'])} errors; CPU per flow: KBS {r['kbs_cpu_ms']:.1f} ms, "
                    f"store {r['store_cpu_ms']:.2f} ms, load generator {r['load_cpu_ms']:.1f} ms; "
                    f"cores busy {100 * r['cpu_busy']:.0f}%"
                )
        finally:
            close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
