"""dm-verity throughput: ``trustpod verity`` vs ``veritysetup`` (format and verify), plus peak RSS.

Run on its own: ``python benchmarks/bench_verity.py [--size-mib 1024] [--rss-gib 4]``.
Data files live in a temporary directory under /tmp and are deleted afterwards. Both tools read
from a warm page cache (the file is read once first), each measurement is the best of --repeat
runs of the command-line tool (process start included for both).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SALT = "aa" * 32
UUID = "12345678-1234-1234-1234-123456789abc"


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


def _timed(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return time.perf_counter() - t, res.stdout


def _race(a: list[str], b: list[str], repeat: int) -> tuple[float, str, float, str]:
    """Best-of-``repeat`` for both commands, alternating them so load changes hit both."""
    best_a = best_b = float("inf")
    out_a = out_b = ""
    for _ in range(repeat):
        ta, out_a = _timed(a)
        tb, out_b = _timed(b)
        best_a, best_b = min(best_a, ta), min(best_b, tb)
    return best_a, out_a, best_b, out_b


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument(
        "--rss-gib", type=int, default=4, help="sparse image for the RSS check (0: skip)"
    )
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("veritysetup") is None:
        print("veritysetup not installed (apt-get install cryptsetup-bin)", file=sys.stderr)
        return 2
    size = args.size_mib << 20
    common = [f"--salt={SALT}", f"--uuid={UUID}"]
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-verity-", dir="/tmp") as tmp:
        d = Path(tmp)
        data = d / "data.img"
        _make_data(data, size)
        vs_fmt, vs_out, tp_fmt, tp_out = _race(
            ["veritysetup", "format", str(data), str(d / "vs.hash"), *common],
            [*_trustpod(), "verity", "format", str(data), str(d / "tp.hash"), *common],
            args.repeat,
        )
        assert _root(vs_out) == _root(tp_out), "root hashes differ"
        assert (d / "vs.hash").read_bytes() == (d / "tp.hash").read_bytes(), "hash files differ"
        root = _root(vs_out)
        vs_ver, _, tp_ver, _ = _race(
            ["veritysetup", "verify", str(data), str(d / "vs.hash"), root],
            [*_trustpod(), "verity", "verify", str(data), str(d / "tp.hash"), root],
            args.repeat,
        )
        rows += [("format", vs_fmt, tp_fmt), ("verify", vs_ver, tp_ver)]
        data.unlink()
        rss = None
        if args.rss_gib:
            big = d / "sparse.img"
            with big.open("wb") as f:
                f.truncate(args.rss_gib << 30)
            rss_fmt = _peak_rss_kib(
                [*_trustpod(), "verity", "format", str(big), str(d / "big.hash"), *common]
            )
            out = subprocess.run(
                [*_trustpod(), "verity", "dump", str(d / "big.hash")],
                capture_output=True,
                text=True,
            ).stdout
            del out
            fmt_out = subprocess.run(
                ["veritysetup", "format", str(big), str(d / "vs-big.hash"), *common],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rss_ver = _peak_rss_kib(
                [*_trustpod(), "verity", "verify", str(big), str(d / "big.hash"), _root(fmt_out)]
            )
            rss = (rss_fmt, rss_ver)
    mib = args.size_mib
    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}"
    )
    print(
        f"{mib} MiB random data, warm page cache, best of {args.repeat} alternating runs "
        "(CLI process incl. start)"
    )
    print(f"{'op':8} {'veritysetup':>16} {'trustpod':>16} {'ratio':>7}")
    for op, vs, tp in rows:
        ratio = vs / tp
        print(
            f"{op:8} {mib / vs:9.0f} MiB/s {vs:4.2f}s {mib / tp:7.0f} MiB/s {tp:4.2f}s {ratio:6.0%}"
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
