"""AttestationService end to end with the sample TEE: verify -> policy -> EAR, policy admin,
cross-instance policy updates, signer sharing, reference values, failures."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from trustpod._internal.b64 import b64_encode, b64url_decode
from trustpod._internal.clock import FixedClock
from trustpod._internal.jcs import jcs_digest
from trustpod.attestation.service import (
    POLICY_NAMESPACE,
    AttestationService,
    EarTokenSettings,
    TokenSettings,
)
from trustpod.attestation.token_verify import TokenVerifier
from trustpod.collateral.wiring import build_verifiers
from trustpod.errors import (
    ConfigError,
    EvidenceError,
    NotFoundError,
    PolicyDenied,
    VerificationError,
)
from trustpod.guest.attesters.sample import SampleAttester
from trustpod.rvps import ReferenceValueStore
from trustpod.storage.memory import MemoryStore
from trustpod.verifiers.base import TeeClaims, VerifierRegistry, VerifyInput

NOW = 1_800_000_000
RUNTIME = {
    "nonce": "bm9uY2U=",
    "tee-pubkey": {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "x", "y": "y"},
    "additional-evidence": "",
}
INITDATA = """version = "0.1.0"
algorithm = "sha384"
[data]
"aa.toml" = '''
[token_configs.kbs]
url = "http://kbs"
'''
"""
SAMPLE_RV = {
    "launch_digest": ["abcde"],
    "svn": ["1"],
    "major_version": [1],
    "minimum_minor_version": [0],
}


def evidence(runtime: dict[str, Any] = RUNTIME) -> Any:
    return SampleAttester().get_evidence(jcs_digest(runtime))


def make(store: MemoryStore | None = None, **settings: Any) -> AttestationService:
    store = store or MemoryStore()
    clock = FixedClock(NOW)
    return AttestationService(
        store, build_verifiers(tees=("sample",)), EarTokenSettings(**settings), clock
    )


def register(service_store: MemoryStore, values: dict[str, Any]) -> None:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    ReferenceValueStore(service_store, FixedClock(NOW)).register(
        {"version": "0.1.0", "type": "sample", "payload": payload}
    )


def claims_of(token: str) -> dict[str, Any]:
    return json.loads(b64url_decode(token.split(".")[1]))


def test_contraindicated_without_reference_values() -> None:
    svc = make()
    token = svc.evaluate("sample", evidence(), RUNTIME, None)
    cpu0 = claims_of(token)["submods"]["cpu0"]
    assert cpu0["ear.status"] == "contraindicated"
    assert cpu0["ear.appraisal-policy-id"] == "default"
    ev = cpu0["ear.veraison.annotated-evidence"]
    assert ev["runtime_data_claims"] == RUNTIME
    assert ev["report_data"] == b64_encode(jcs_digest(RUNTIME))
    assert "init_data" not in ev
    # the KBS's built-in tee-pubkey pointer resolves
    assert ev["runtime_data_claims"]["tee-pubkey"]["crv"] == "P-256"


def test_affirming_with_reference_values_and_initdata() -> None:
    store = MemoryStore()
    svc = make(store)
    register(store, SAMPLE_RV)
    result = svc.appraise("sample", evidence(), RUNTIME, INITDATA)
    claims = result.claims
    assert claims_of(result.token) == claims
    cpu0 = claims["submods"]["cpu0"]
    assert cpu0["ear.status"] == "affirming"
    ev = cpu0["ear.veraison.annotated-evidence"]
    assert ev["init_data_claims"] == {"aa.toml": {"token_configs": {"kbs": {"url": "http://kbs"}}}}
    assert base64.b64decode(ev["init_data"]) == hashlib.sha384(INITDATA.encode()).digest()
    assert cpu0["ear.trustee.identifiers"] == {"validated": {}}
    assert claims["iat"] == NOW and claims["exp"] == NOW + 300
    assert result.explain["submods"]["cpu0"]["policy_id"] == "default_cpu"
    assert result.explain["submods"]["cpu0"]["ear.status"] == "affirming"
    assert result.explain["reference_values"] == sorted(SAMPLE_RV)
    verifier = TokenVerifier(trusted_jwks=[svc.public_jwk()], clock=FixedClock(NOW))
    assert verifier.verify(result.token) == claims


def test_report_data_mismatch_is_verification_error() -> None:
    other = {**RUNTIME, "nonce": "b3RoZXI="}
    with pytest.raises(VerificationError) as exc:
        make().evaluate("sample", evidence(other), RUNTIME, None)
    assert exc.value.reason == "sample.report_data"


def test_sha512_runtime_digest() -> None:
    digest = jcs_digest(RUNTIME, "sha512")
    token = make().evaluate(
        "sample", SampleAttester().get_evidence(digest), RUNTIME, None, hash_algorithm="sha512"
    )
    assert claims_of(token)["submods"]["cpu0"]["ear.status"] == "contraindicated"


def test_bad_initdata_and_unknown_tee() -> None:
    svc = make()
    with pytest.raises(EvidenceError):
        svc.evaluate("sample", evidence(), RUNTIME, "version = 1")
    with pytest.raises(VerificationError) as exc:
        svc.evaluate("snp", {}, RUNTIME, None)
    assert exc.value.reason == "verifier.unknown_tee"


def test_verbose_token_false_drops_additional_evidence() -> None:
    token = make(verbose_token=False).evaluate("sample", evidence(), RUNTIME, None)
    ev = claims_of(token)["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert "additional-evidence" not in ev["runtime_data_claims"]


def test_defaults_installed_without_overwrite() -> None:
    store = MemoryStore()
    store.put(POLICY_NAMESPACE, "default_cpu.rego", b"package policy\ntrust_claims := {}\n")
    svc = make(store)
    assert svc.get_policy("default_cpu") == "package policy\ntrust_claims := {}\n"
    assert set(svc.list_policies()) == {"default_cpu", "default_gpu"}
    with pytest.raises(PolicyDenied) as exc:  # "At least one policy claim must be set."
        svc.evaluate("sample", evidence(), RUNTIME, None)
    assert exc.value.reason == "policy.trust_claims"


CUSTOM = """package policy
import rego.v1
trust_claims := {"hardware": 2, "executables": 3, "configuration": 2}
"""


def test_set_policy_takes_effect_across_instances() -> None:
    store = MemoryStore()
    a, b = make(store), make(store)
    assert (
        claims_of(b.evaluate("sample", evidence(), RUNTIME, None))["submods"]["cpu0"]["ear.status"]
        == "contraindicated"
    )
    a.set_policy("default_cpu", CUSTOM)  # replica A updates; replica B sees it at once
    cpu0 = claims_of(b.evaluate("sample", evidence(), RUNTIME, None))["submods"]["cpu0"]
    assert cpu0["ear.status"] == "affirming"
    assert cpu0["ear.trustworthiness-vector"] == {
        "configuration": 2,
        "executables": 3,
        "hardware": 2,
    }
    assert a.get_policy("default_cpu") == CUSTOM


def test_replicas_share_the_signing_key() -> None:
    store = MemoryStore()
    a, b = make(store), make(store)
    assert a.jwks() == b.jwks() == {"keys": [a.public_jwk()]}
    verifier = TokenVerifier(trusted_jwks=[b.public_jwk()], clock=FixedClock(NOW))
    assert verifier.verify(a.evaluate("sample", evidence(), RUNTIME, None))


def test_set_policy_rejects_bad_rego_and_ids() -> None:
    svc = make()
    with pytest.raises(EvidenceError) as exc:
        svc.set_policy("default_cpu", "package policy\ntrust_claims := {\n")
    assert exc.value.reason == "rego.parse"
    with pytest.raises(EvidenceError) as exc:
        svc.set_policy("../etc", CUSTOM)
    assert exc.value.reason == "policy.id"
    assert svc.get_policy("default_cpu").startswith("package policy")


def test_custom_policy_id_and_missing_policy() -> None:
    svc = make()
    svc.set_policy("strict_cpu", CUSTOM)
    token = svc.evaluate("sample", evidence(), RUNTIME, None, policy_id="strict")
    assert claims_of(token)["submods"]["cpu0"]["ear.appraisal-policy-id"] == "strict"
    with pytest.raises(NotFoundError) as exc:
        svc.evaluate("sample", evidence(), RUNTIME, None, policy_id="nope")
    assert exc.value.reason == "policy.not_found"


def test_policy_runtime_error_fails_closed() -> None:
    svc = make()
    svc.set_policy(
        "default_cpu",
        "package policy\nimport rego.v1\n"
        'trust_claims := {"hardware": to_number(input.sample.svn) + base64.decode('
        '"!!")}\n',
    )
    with pytest.raises(PolicyDenied) as exc:
        svc.evaluate("sample", evidence(), RUNTIME, None)
    assert exc.value.reason == "rego.error"


def test_signer_from_configured_files(trustee_vectors: Any) -> None:
    d = trustee_vectors / "attestation-service" / "tests" / "fixtures" / "jwk"
    svc = make(
        signer_key_path=str(d / "signing-key.pem"),
        signer_cert_path=d / "cert-chain.pem",
        signer_cert_url="https://example/chain.pem",
    )
    expected = json.loads((d / "expected-jwks.json").read_text())["keys"][0]
    assert svc.public_jwk() == {**expected, "x5u": "https://example/chain.pem"}
    assert TokenSettings is EarTokenSettings


def test_evaluate_is_fast_enough() -> None:
    import time

    svc = make()
    svc.evaluate("sample", evidence(), RUNTIME, None)
    ev = evidence()
    start = time.perf_counter()
    for _ in range(50):
        svc.evaluate("sample", ev, RUNTIME, None)
    assert (time.perf_counter() - start) / 50 < 0.02  # ~1 ms measured


@pytest.mark.parametrize("minutes", [0, -1, 24 * 60 + 1])
def test_token_duration_bounds(minutes: int) -> None:
    with pytest.raises(ConfigError):
        make(duration_min=minutes)


class _MultiDevice:
    """A fake verifier emitting one cpu and one gpu claims set (like a TDX + GPU composite)."""

    tee = "sample"

    def __init__(self, classes: tuple[str, ...]) -> None:
        self.classes = classes

    def verify(self, evidence: Any, expected: VerifyInput) -> list[TeeClaims]:
        return [
            TeeClaims({"report_data": b64_encode(expected.report_data), "n": i}, cls)
            for i, cls in enumerate(self.classes)
        ]


def test_one_submod_per_claims_set_with_class_policies() -> None:
    store = MemoryStore()
    registry = VerifierRegistry({"sample": _MultiDevice(("cpu", "gpu", "gpu"))})
    svc = AttestationService(store, registry, EarTokenSettings(), FixedClock(NOW))
    result = svc.appraise("sample", {}, RUNTIME, None)
    assert list(result.claims["submods"]) == ["cpu0", "gpu0", "gpu1"]
    assert result.explain["submods"]["gpu1"]["policy_id"] == "default_gpu"
    for sub in result.claims["submods"].values():
        assert sub["ear.appraisal-policy-id"] == "default"
        assert sub["ear.status"] == "contraindicated"
    missing = VerifierRegistry({"sample": _MultiDevice(("cpu", "dcu"))})
    with pytest.raises(NotFoundError):
        AttestationService(store, missing, EarTokenSettings(), FixedClock(NOW)).evaluate(
            "sample", {}, RUNTIME, None
        )
