"""Per-call timing for the micro-benchmarks: wall and CPU, best of a few rounds, one thread."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["best_us_per_call"]


def best_us_per_call(fn: Callable[[], object], n: int, rounds: int = 5) -> tuple[float, float]:
    """One warm-up call, then ``rounds`` rounds of ``n`` calls: the best round's wall and CPU
    (``process_time``: user + system of this process) microseconds per call."""
    fn()
    wall = cpu = float("inf")
    for _ in range(rounds):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        wall = min(wall, (time.perf_counter() - w0) / n * 1e6)
        cpu = min(cpu, (time.process_time() - c0) / n * 1e6)
    return wall, cpu
