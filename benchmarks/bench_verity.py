"""dm-verity ``trustpod verity`` vs ``veritysetup`` (format and verify): CPU time, wall, peak RSS.

Run on its own: ``python benchmarks/bench_verity.py [--size-mib 512] [--repeat 5] [--rss-gib 4]``.
Data files live in a temporary directory under /tmp and are deleted afterwards. Both tools read
from a warm page cache (the file is read once first). Every figure is for the whole command-line
process (interpreter start included for trustpod): CPU = user + system time of that child from
``wait4``'s rusage; "pinned" runs it under ``taskset -c 0`` (one core, the goal's condition),
"free" lets it use both cores. Runs alternate veritysetup / trustpod so load changes hit both;
the table shows the median and (in brackets) the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SALT = "aa" * 32
UUID = "12345678-1234-1234-1234-123456789abc"
PIN = ["taskset", "-c", "0"]


@dataclass
class Runs:
    wall: list[float]
    cpu: list[float]

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)


def _trustpod() -> list[str]:
    return [sys.executable, "-m", "trustpod.cli"]


def _make_data(path: Path, size: int) -> None:
    chunk = os.urandom(64 << 20)
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
    with path.open("rb") as f:  # warm the page cache
        while f.read(64 << 20):
            pass


def _run_rusage(cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, CPU s = user + sys of this child from ``os.wait4``, stdout)."""
    with tempfile.TemporaryFile("w+") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode})")
        out.seek(0)
        return wall, ru.ru_utime + ru.ru_stime, out.read()


def _race(a: list[str], b: list[str], repeat: int, pin: bool) -> tuple[Runs, str, Runs, str]:
    """``repeat`` alternating runs of both commands."""
    ra, rb = Runs([], []), Runs([], [])
    out_a = out_b = ""
    prefix = PIN if pin else []
    for _ in range(repeat):
        wa, ca, out_a = _run_rusage([*prefix, *a])
        wb, cb, out_b = _run_rusage([*prefix, *b])
        ra.add(wa, ca)
        rb.add(wb, cb)
    return ra, out_a, rb, out_b


def _root(stdout: str) -> str:
    return next(ln.split()[-1] for ln in stdout.splitlines() if ln.startswith("Root hash"))


def _peak_rss_kib(cmd: list[str]) -> tuple[int, float]:
    """Peak RSS of ``cmd`` via GNU time (``ru_maxrss`` from ``wait4`` would also count the
    forked copy of this benchmark process before ``exec``)."""
    gnu_time = shutil.which("time") or "/usr/bin/time"
    t = time.perf_counter()
    res = subprocess.run(
        [gnu_time, "-f", "MAXRSS=%M", *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - t
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("MAXRSS="))
    return int(line.split("=", 1)[1]), elapsed


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):5.2f} ({min(values):4.2f})"


def _rss(d: Path, gib: int, common: list[str]) -> tuple[tuple[int, float], tuple[int, float]]:
    big = d / "sparse.img"
    with big.open("wb") as f:
        f.truncate(gib << 30)
    rss_fmt = _peak_rss_kib(
        [*_trustpod(), "verity", "format", str(big), str(d / "big.hash"), *common]
    )
    fmt_out = subprocess.run(
        ["veritysetup", "format", str(big), str(d / "vs-big.hash"), *common],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rss_ver = _peak_rss_kib(
        [*_trustpod(), "verity", "verify", str(big), str(d / "big.hash"), _root(fmt_out)]
    )
    return rss_fmt, rss_ver


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument(
        "--rss-gib", type=int, default=4, help="sparse image for the RSS check (0: skip)"
    )
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-free", action="store_true", help="only the pinned (one-core) runs")
    args = ap.parse_args()
    for tool, pkg in (("veritysetup", "cryptsetup-bin"), ("taskset", "util-linux")):
        if shutil.which(tool) is None:
            print(f"{tool} not installed (apt-get install {pkg})", file=sys.stderr)
            return 2
    size = args.size_mib << 20
    common = [f"--salt={SALT}", f"--uuid={UUID}"]
    rows: list[tuple[str, str, Runs, Runs]] = []
    modes = [("pinned", True)] + ([] if args.no_free else [("free", False)])
    rss = None
    with tempfile.TemporaryDirectory(prefix="bench-verity-", dir="/tmp") as tmp:
        d = Path(tmp)
        data = d / "data.img"
        _make_data(data, size)
        for mode, pin in modes:
            vs, vs_out, tp, tp_out = _race(
                ["veritysetup", "format", str(data), str(d / "vs.hash"), *common],
                [*_trustpod(), "verity", "format", str(data), str(d / "tp.hash"), *common],
                args.repeat,
                pin,
            )
            assert _root(vs_out) == _root(tp_out), "root hashes differ"
            assert (d / "vs.hash").read_bytes() == (d / "tp.hash").read_bytes(), "files differ"
            rows.append(("format", mode, vs, tp))
            root = _root(vs_out)
            vs, _, tp, _ = _race(
                ["veritysetup", "verify", str(data), str(d / "vs.hash"), root],
                [*_trustpod(), "verity", "verify", str(data), str(d / "tp.hash"), root],
                args.repeat,
                pin,
            )
            rows.append(("verify", mode, vs, tp))
        data.unlink()
        if args.rss_gib:
            rss = _rss(d, args.rss_gib, common)
    mib = args.size_mib
    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{mib} MiB random data, warm page cache, {args.repeat} alternating runs per row; "
        "seconds per CLI process (start included), median (best)"
    )
    print(
        f"{'op':7} {'mode':7} {'veritysetup CPU':>16} {'wall':>12} "
        f"{'trustpod CPU':>14} {'wall':>12} {'CPU tp/vs':>9} {'MiB/s tp':>9}"
    )
    for op, mode, vs, tp in rows:
        ratio = statistics.median(tp.cpu) / statistics.median(vs.cpu)
        rate = mib / statistics.median(tp.wall)
        print(
            f"{op:7} {mode:7} {_fmt(vs.cpu):>16} {_fmt(vs.wall):>12} "
            f"{_fmt(tp.cpu):>14} {_fmt(tp.wall):>12} {ratio:9.2f} {rate:9.0f}"
        )
    if rss:
        (fk, ft), (vk, vt) = rss
        print(
            f"{args.rss_gib} GiB sparse image: format peak RSS {fk / 1024:.0f} MiB ({ft:.1f}s), "
            f"verify peak RSS {vk / 1024:.0f} MiB ({vt:.1f}s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
