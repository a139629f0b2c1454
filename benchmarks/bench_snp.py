"""SNP verification cost with a cached chain vs one bare ECDSA P-384 verification.

Run: ``.venv/bin/python benchmarks/bench_snp.py [N]`` (reads the Trustee vectors from
TRUSTPOD_VECTORS or ../shared/vectors). Prints per-operation microseconds and the ratio.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from trustpod.evidence.snp import SnpReport
from trustpod.verifiers.base import VerifyInput
from trustpod.verifiers.snp import verify_snp
from trustpod.verifiers.snp_chain import ChainCache, SnpChain, load_cert

ROOT = Path(
    os.environ.get("TRUSTPOD_VECTORS", Path(__file__).resolve().parents[2] / "shared/vectors")
)
VEC = ROOT / "trustee/deps/verifier"


def per_op(fns: list[Callable[[], object]], n: int, rounds: int = 7) -> list[float]:
    """Best per-call time (us) of each function; rounds interleave them to share CPU noise."""
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            fn()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best[i] = min(best[i], (time.perf_counter() - t0) / n)
    return [b * 1e6 for b in best]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    raw = (VEC / "test_data/snp/test-report.bin").read_bytes()
    vcek = (VEC / "test_data/snp/test-vcek.der").read_bytes()
    ask, ark, _ = (
        c.public_bytes(Encoding.DER)
        for c in x509.load_pem_x509_certificates(
            (VEC / "src/snp/milan_ask_ark_asvk.pem").read_bytes()
        )
    )
    report = SnpReport.from_bytes(raw)
    key = load_cert(vcek, "VCEK").public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    sig, signed = report.signature_der(), raw[:0x2A0]
    chain, cache = SnpChain(vcek, ask, ark), ChainCache()
    expected = VerifyInput(report.report_data, None, dt.datetime.now(dt.UTC))

    algo = ec.ECDSA(hashes.SHA384())
    bare, full = per_op(
        [
            lambda: key.verify(sig, signed, algo),
            lambda: verify_snp(SnpReport.from_bytes(raw), chain, expected, cache=cache),
        ],
        n,
    )
    [cold] = per_op([lambda: verify_snp(report, chain, expected)], max(n // 20, 20), rounds=3)
    print(f"bare P-384 verify          : {bare:8.1f} us")
    print(
        f"parse + verify_snp (cached): {full:8.1f} us   ratio {full / bare:.2f}x (target <= 1.30)"
    )
    print(f"verify_snp, chain uncached : {cold:8.1f} us   ({cold / bare:.1f}x)")


if __name__ == "__main__":
    main()
