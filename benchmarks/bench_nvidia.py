"""NVIDIA GPU evidence verification (chain cached) vs one bare ECDSA P-384 verification.

Run: ``.venv/bin/python -m benchmarks.bench_nvidia [N]`` (reads the CoCo CI Hopper report from
TRUSTPOD_VECTORS or ../shared/vectors; falls back to an emulated GPU when absent). Prints
per-operation microseconds, CPU microseconds and the ratio (goal <= 1.5).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from trustpod.evidence.nvidia_spdm import NvidiaReport
from trustpod.guest.emulator.gpu import EmulatedGpu
from trustpod.verifiers.base import VerifyInput
from trustpod.verifiers.nvidia import NvidiaVerifier
from trustpod.verifiers.nvidia_chain import DeviceRoots

ROOT = Path(
    os.environ.get("TRUSTPOD_VECTORS", Path(__file__).resolve().parents[2] / "shared/vectors")
)
NV = ROOT / "trustee/deps/verifier/test_data/nvidia"
COCO_RD = bytes.fromhex(
    "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fec"
    "e279b616efefc2aae21da80cf5581250"
)


def per_op(fns: list[Callable[[], object]], n: int, rounds: int = 7) -> list[tuple[float, float]]:
    """Best (wall us, CPU us) per call of each function; rounds interleave them."""
    best = [(float("inf"), float("inf"))] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            fn()
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                fn()
            wall = (time.perf_counter() - t0) / n
            cpu = (time.process_time() - c0) / n
            best[i] = (min(best[i][0], wall), min(best[i][1], cpu))
    return [(w * 1e6, c * 1e6) for w, c in best]


def _inputs() -> tuple[str, dict[str, Any], bytes, NvidiaVerifier]:
    if (NV / "hopper_coco_report1.txt").is_file():
        report = bytes.fromhex((NV / "hopper_coco_report1.txt").read_text().strip())
        chain = (NV / "hopper_coco_certs1.txt").read_bytes()
        ev = {
            "device_evidence_list": [
                {
                    "arch": "HOPPER",
                    "evidence": report.hex(),
                    "certificate": base64.b64encode(chain).decode(),
                }
            ]
        }
        return "CoCo CI Hopper report", ev, COCO_RD, NvidiaVerifier()
    gpu = EmulatedGpu.create({i: bytes(48) for i in range(1, 65)})
    rd = bytes(48)
    roots = DeviceRoots.default((gpu.root_der,))
    return "emulated GPU (vectors absent)", gpu.evidence(rd), rd, NvidiaVerifier(roots)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    label, ev, rd, verifier = _inputs()
    device = ev["device_evidence_list"][0]
    text = device["evidence"]
    raw = bytes.fromhex(text) if text[:2] == "11" else base64.b64decode(text)
    report = NvidiaReport.parse(raw)
    leaf = x509.load_pem_x509_certificates(base64.b64decode(device["certificate"]))[0]
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    sig = report.signature
    der = encode_dss_signature(int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big"))
    expected = VerifyInput(rd, None, dt.datetime.now(dt.UTC))

    def bare() -> None:
        key.verify(der, report.signed, ec.ECDSA(hashes.SHA384()))

    def full() -> None:
        verifier.verify(ev, expected)

    (bw, bc), (fw, fc) = per_op([bare, full], n)
    print(f"nvidia verify ({label}, {len(report.response.blocks)} blocks, chain cached)")
    print(f"  bare P-384 verify : {bw:8.1f} us/op  cpu {bc:8.1f} us/op")
    print(f"  full GPU evidence : {fw:8.1f} us/op  cpu {fc:8.1f} us/op  ({1e6 / fw:.0f}/s)")
    print(f"  ratio             : {fw / bw:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
