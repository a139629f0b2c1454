"""At-rest encryption cost (ADR 0302): ``get``/``put`` of a resource on SQLite, plain and through
``EncryptedStore`` (AES-256-GCM envelope, local KEK, data-key cache), and opening a store
(the key-check record).

Run: ``.venv/bin/python benchmarks/bench_at_rest.py [N]``. Prints wall and CPU microseconds per
operation (best of 5 rounds of N operations, one thread).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from trustpod.storage.at_rest import EncryptedStore
from trustpod.storage.envelope import LocalKek
from trustpod.storage.port import KeyValueStore
from trustpod.storage.sqlite import SqliteStore

VALUE = os.urandom(256)


def bench(name: str, fn: Callable[[int], object], n: int) -> None:
    best_wall = best_cpu = float("inf")
    for r in range(5):
        w0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            fn(r * n + i)
        best_wall = min(best_wall, (time.perf_counter() - w0) / n)
        best_cpu = min(best_cpu, (time.process_time() - c0) / n)
    print(f"{name:<44} {best_wall * 1e6:8.1f} us wall {best_cpu * 1e6:8.1f} us CPU")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory() as tmp:
        plain = SqliteStore(Path(tmp) / "plain.sqlite")
        kek = LocalKek(os.urandom(32))
        enc_inner = SqliteStore(Path(tmp) / "enc.sqlite")
        enc = EncryptedStore(enc_inner, kek)
        stores: tuple[tuple[str, KeyValueStore], ...] = (("plain", plain), ("encrypted", enc))
        for label, store in stores:
            store.put("repository", "default/bench/key", VALUE)
            bench(
                f"get 256 B resource, {label}",
                lambda _i, s=store: s.get("repository", "default/bench/key"),
                n,
            )
            bench(
                f"put 256 B resource, {label}",
                lambda i, s=store: s.put("repository", f"default/bench/k{i}", VALUE),
                n // 4,
            )
        bench("open an encrypted store (key check)", lambda _i: EncryptedStore(enc_inner, kek), 50)
        plain.close()
        enc.close()


if __name__ == "__main__":
    main()
