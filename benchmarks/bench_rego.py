"""Rego per-query cost on regorus: a custom resource policy over an EAR-sized input, and the
default attestation policy over an SNP-shaped input.

Run: ``.venv/bin/python -m benchmarks.bench_rego [N]``. Prints wall and CPU microseconds per query
(best of 5 rounds of N queries, one thread). The EAR is built by our own EAR code from a sample
appraisal (about the size of upstream's ``example.token.json``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.timing import best_us_per_call
from trustpod.attestation.defaults import default_policy
from trustpod.attestation.ear import Appraisal, EarTokenSettings, ear_claims
from trustpod.kbs.resource_policy import ResourcePolicy
from trustpod.rego import PolicyEngine, RegoPolicy
from trustpod.storage.memory import MemoryStore

CUSTOM = """package policy
import rego.v1
default allow := false
allow if {
    data.plugin == "resource"
    data["resource-path"][0] == "default"
    count(input.submods) > 0
    every _, s in input.submods { s["ear.status"] == "affirming" }
    not input.submods.cpu0["ear.veraison.annotated-evidence"].sample
}
"""


def _ear() -> dict[str, Any]:
    """Upstream's example EAR claims when the vectors are at hand, else one of ours."""
    root = Path(
        os.environ.get("TRUSTPOD_VECTORS", Path(__file__).resolve().parents[2] / "shared/vectors")
    )
    example = root / "trustee/attestation-service/docs/example.token.json"
    if example.is_file():
        claims: dict[str, Any] = json.loads(example.read_text())
        for sub in claims["submods"].values():
            sub["ear.status"] = "affirming"  # so the policy walks every condition and allows
        return claims
    evidence = {
        "sample": {"svn": "1", "launch_digest": "abcde", "debug": False},
        "init_data": "aa" * 32,
        "report_data": "bb" * 64,
        "runtime_data_claims": {
            "nonce": "n" * 44,
            "tee-pubkey": {
                "kty": "EC",
                "crv": "P-256",
                "alg": "ES256",
                "x": "x" * 43,
                "y": "y" * 43,
            },
        },
        "init_data_claims": {"agent_policy_claims": {"containers": []}},
    }
    vector = {
        "instance-identity": 0,
        "configuration": 2,
        "executables": 3,
        "file-system": 0,
        "hardware": 2,
        "runtime-opaque": 0,
        "storage-opaque": 0,
        "sourced-data": 0,
    }
    a = Appraisal(vector, "default", evidence, {"ear.trustee.identifiers": {"validated": {}}})
    return ear_claims(EarTokenSettings(), {"cpu0": a}, 1_760_000_000)


def bench(name: str, fn: Callable[[], object], n: int) -> None:
    wall, cpu = best_us_per_call(fn, n)
    print(f"{name:<58} {wall:8.1f} us/query  (CPU {cpu:7.1f} us)")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    claims = _ear()
    claims_json = json.dumps(claims, separators=(",", ":"))
    print(f"EAR input: {len(claims_json)} bytes of JSON")
    policy = ResourcePolicy(MemoryStore())
    policy.set(CUSTOM)
    path, query = ["default", "key", "1"], {}
    assert policy.evaluate(claims, "resource", path, query).allow
    bench(
        "resource policy, custom Rego, claims dict",
        lambda: policy.evaluate(claims, "resource", path, query),
        n,
    )
    bench(
        "resource policy, custom Rego, claims as token JSON",
        lambda: policy.evaluate(claims, "resource", path, query, claims_json=claims_json),
        n,
    )
    bench(
        "resource policy, decision cache hit (same token + path)",
        lambda: policy.evaluate(claims, "resource", path, query, claims_key=b"t"),
        n,
    )
    raw = RegoPolicy(CUSTOM)
    data = json.dumps({"plugin": "resource", "resource-path": path, "query": {}})
    bench(
        "RegoPolicy.evaluate, input_json + data_json (no wrapper)",
        lambda: raw.evaluate("data.policy.allow", input_json=claims_json, data_json=data),
        n,
    )
    snp = {
        "snp": {
            "measurement": "aa" * 48,
            "reported_tcb_bootloader": 3,
            "reported_tcb_microcode": 209,
            "reported_tcb_snp": 20,
            "reported_tcb_tee": 0,
            "policy_debug_allowed": False,
            "policy_migrate_ma": False,
            "platform_smt_enabled": True,
            "platform_tsme_enabled": False,
            "policy_abi_major": 0,
            "policy_abi_minor": 31,
            "policy_single_socket": False,
            "policy_smt_allowed": True,
        }
    }
    rv = {
        "snp_launch_measurement": ["aa" * 48],
        "snp_bootloader": [3],
        "snp_microcode": [209],
        "snp_snp_svn": [20],
        "snp_tee_svn": [0],
    }
    cpu = PolicyEngine().compile(
        default_policy("default_cpu"), ("trust_claims", "extensions"), {"reference": rv}
    )
    bench(
        "default_cpu appraisal (trust_claims + extensions), SNP",
        lambda: cpu.evaluate_all(snp),
        n // 4,
    )
    t0 = time.perf_counter()
    RegoPolicy(default_policy("default_cpu"))
    took = (time.perf_counter() - t0) * 1e3
    print(f"{'parse default_cpu (once per digest and thread)':<58} {took:8.2f} ms")


if __name__ == "__main__":
    main()
