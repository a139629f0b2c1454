"""TDX quote verification cost: parse, trustpod's DCAP steps, dcap-qvl second opinion, CCEL.

Run: ``python benchmarks/bench_tdx.py [--vectors ../shared/vectors] [-n 200]``. Uses the real
tdx_quote_6 with its real TCB info (insecure_ options: the vectors lack the issuer chain and CRLs)
and the emulated complete hierarchy of ``tests/tdx_emulator.py`` for the full path incl. dcap-qvl.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import logging
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from tdx_emulator import emulate  # noqa: E402
from trustpod.evidence.ccel import CcEventLog  # noqa: E402
from trustpod.evidence.tdx import parse_td_quote  # noqa: E402
from trustpod.verifiers.base import VerifyInput  # noqa: E402
from trustpod.verifiers.intel_collateral import IntelCollateral  # noqa: E402
from trustpod.verifiers.intel_dcap import DcapOptions  # noqa: E402
from trustpod.verifiers.tdx import TdxVerifier  # noqa: E402

NOW = dt.datetime(2025, 11, 1, tzinfo=dt.UTC)


class _Fixed:
    def __init__(self, col: IntelCollateral) -> None:
        self.col = col

    def get_tdx(self, fmspc: str, ca: str) -> IntelCollateral:
        return self.col


def _time(fn: Callable[[], object], n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vectors", default=str(ROOT.parent / "shared" / "vectors"))
    ap.add_argument("-n", type=int, default=200)
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # the insecure_ options warn on every call
    data = Path(args.vectors) / "trustee" / "deps" / "verifier" / "test_data"
    q6 = (data / "tdx_quote_6.dat").read_bytes()
    tcb, qe = (data / "tcbInfo.json").read_bytes(), (data / "enclaveIdentity.json").read_bytes()
    real = TdxVerifier(
        _Fixed(IntelCollateral.from_parts(tcb_info=tcb, qe_identity=qe)),
        DcapOptions(insecure_unsigned_collateral=True, insecure_skip_crl=True),
    )
    ev6 = {"quote": base64.b64encode(q6).decode()}
    exp6 = VerifyInput(parse_td_quote(q6).body.report_data, None, NOW)
    e = emulate(q6, tcb, qe)
    col = IntelCollateral.from_parts(
        tcb_info=e.tcb_info, qe_identity=e.qe_identity, tcb_info_issuer_chain=e.tcb_chain,
        qe_identity_issuer_chain=e.tcb_chain, pck_crl=e.pck_crl, root_ca_crl=e.root_ca_crl,
    )  # fmt: skip
    evq = {"quote": base64.b64encode(e.quote).decode()}
    expq = VerifyInput(parse_td_quote(e.quote).body.report_data, None, NOW)
    full = TdxVerifier(_Fixed(col), DcapOptions(extra_roots_der=(e.root_der,)))
    own = TdxVerifier(_Fixed(col), DcapOptions(extra_roots_der=(e.root_der,),
                                               cross_check_dcap_qvl=False))  # fmt: skip
    ovmf = (data / "CCEL_data_ovmf").read_bytes()
    rows = [
        ("parse quote (v4, PCK chain + SGX extensions)", lambda: parse_td_quote(q6)),
        ("real quote 6: trustpod DCAP (no CRL/TCB-signer: vectors lack them)",
         lambda: real.verify(ev6, exp6)),
        ("emulated complete collateral: trustpod DCAP only", lambda: own.verify(evq, expq)),
        ("emulated complete collateral: trustpod + dcap-qvl (default)",
         lambda: full.verify(evq, expq)),
        ("CCEL parse + replay RTMR0-3 (OVMF, 20 events)",
         lambda: [CcEventLog.parse(ovmf).replay(i) for i in (1, 2, 3, 4)]),
    ]  # fmt: skip
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print("| operation | median ms | p95 ms |\n|---|---|---|")
    for name, fn in rows:
        med, p95 = _time(fn, args.n)
        print(f"| {name} | {med:.2f} | {p95:.2f} |")


if __name__ == "__main__":
    main()
