"""Encrypted-layer pull cost: HMAC check + decrypt (AES-256-CTR) + unpack of an encrypted gzip
layer vs unpack of the same layer unencrypted — the puller's own code path
(``verify_layer_hmac`` over the cached ciphertext, then ``DecryptingReader`` streaming into
``trustpod.oci.unpack.unpack_layer``), and for comparison decrypting to a 0600 file first.

Run: ``python -m benchmarks.bench_ocicrypt [--size-mib 100] [--repeat 3]``. The layer is one
tar of 16 files (half random, half repetitive text, as bench_oci.py), gzip level 1, encrypted
by ``trustpod.oci.encrypt``'s layer cipher. Runs alternate plain / encrypted from a fresh
rootfs; medians of wall time and of process CPU time (user + system) are reported.
Goal (issue 13): encrypted throughput >= 0.8x unencrypted.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import IO, cast

from benchmarks.bench_oci import make_tree
from trustpod.oci.decrypt import DecryptingReader, decrypt_blob, verify_layer_hmac
from trustpod.oci.layout import tar_tree
from trustpod.oci.ocicrypt import LayerEncrypter, new_private_options
from trustpod.oci.settings import OciSettings
from trustpod.oci.unpack import UnpackBudget, remove_tree, unpack_layer


def _timed(fn: object) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()  # type: ignore[operator]
    return time.perf_counter() - w, time.process_time() - c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trustpod-bench-ocicrypt-") as tmpd:
        tmp = Path(tmpd)
        make_tree(tmp / "tree", args.size_mib << 20, 16)
        tar = tar_tree(tmp / "tree")
        shutil.rmtree(tmp / "tree")
        diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
        blob = gzip.compress(tar, compresslevel=1, mtime=0)
        del tar
        plain = tmp / "plain.blob"
        plain.write_bytes(blob)
        opts = new_private_options("sha256:" + hashlib.sha256(blob).hexdigest())
        enc = LayerEncrypter(opts)
        body = enc.update(blob)
        tail, pub = enc.finish()
        encrypted = tmp / "enc.blob"
        encrypted.write_bytes(body + tail)
        del blob, body
        settings = OciSettings()

        def unpack(src: Path | IO[bytes]) -> None:
            root = tmp / "rootfs"
            os.mkdir(root)
            try:
                unpack_layer(src, "gzip", diff_id, root, UnpackBudget(settings), name="bench")
            finally:
                remove_tree(root)

        def run_plain() -> None:
            unpack(plain)

        def run_encrypted() -> None:
            with encrypted.open("rb") as f:
                verify_layer_hmac(f, opts, pub)
                unpack(cast(IO[bytes], DecryptingReader(f, opts)))

        def run_encrypted_file() -> None:
            out = decrypt_blob(encrypted, tmp / "dec.plain", opts, pub)
            try:
                unpack(out)
            finally:
                out.unlink()

        def run_decrypt_only() -> None:
            decrypt_blob(encrypted, tmp / "dec.plain", opts, pub).unlink()

        pl, en, ef, de = [], [], [], []
        for _ in range(args.repeat):
            pl.append(_timed(run_plain))
            en.append(_timed(run_encrypted))
            ef.append(_timed(run_encrypted_file))
            de.append(_timed(run_decrypt_only))
        compressed = plain.stat().st_size
    mib = args.size_mib

    def med(xs: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(w for w, _ in xs), statistics.median(c for _, c in xs)

    (pw, pc), (ew, ec), (fw, fc), (dw, dc) = med(pl), med(en), med(ef), med(de)
    print(f"layer: {mib} MiB tar, {compressed / 2**20:.1f} MiB gzip (level 1), {args.repeat} runs")
    print(f"unencrypted unpack:      {pw:6.2f} s wall ({mib / pw:6.1f} MiB/s), {pc:5.2f} s CPU")
    print(f"HMAC, decrypt + unpack:  {ew:6.2f} s wall ({mib / ew:6.1f} MiB/s), {ec:5.2f} s CPU")
    print(f"  via a 0600 file:       {fw:6.2f} s wall ({mib / fw:6.1f} MiB/s), {fc:5.2f} s CPU")
    print(
        f"decrypt only (CTR+HMAC): {dw:6.2f} s wall "
        f"({compressed / 2**20 / dw:6.1f} MiB/s of ciphertext), {dc:5.2f} s CPU"
    )
    print(
        f"throughput ratio encrypted/unencrypted: {pw / ew:.2f}x streamed, "
        f"{pw / fw:.2f}x via file (goal >= 0.8x)"
    )
    print(f"CPU ratio (less noisy here): {pc / ec:.2f}x streamed, {pc / fc:.2f}x via file")
    bp, be, bf = (min(w for w, _ in xs) for xs in (pl, en, ef))
    print(
        f"best of {args.repeat} (least disturbed by other load): {mib / bp:.1f} vs "
        f"{mib / be:.1f} MiB/s = {bp / be:.2f}x streamed, {bp / bf:.2f}x via file"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
