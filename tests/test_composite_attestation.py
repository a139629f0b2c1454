"""Composite attestation over a real KBS (uvicorn, 127.0.0.1): CPU evidence (sample) plus an
EMULATED Hopper GPU as ``additional_evidence``; the EAR has submods ``cpu0`` and ``gpu0``; the
default resource policy (every submod affirming) gates a resource on both."""

from __future__ import annotations

import base64
import json
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from kbs_support import builtin_kbs, serve
from trustpod._internal.clock import FixedClock
from trustpod._internal.jcs import jcs_digest
from trustpod.attestation.composite import parse_additional_evidence
from trustpod.errors import EvidenceError, PolicyDenied
from trustpod.guest.attesters.base import UnsupportedAttesterFeature
from trustpod.guest.attesters.nvidia import EmulatedSource, NvidiaAttester, detect_gpu
from trustpod.guest.attesters.sample import SampleAttester
from trustpod.guest.emulator.gpu import EmulatedGpu
from trustpod.guest.kbs_client import KbsClient
from trustpod.guest.tee_key import TeeKeyPair
from trustpod.kbs.config import parse_config
from trustpod.kbs.core import KbsCore
from trustpod.protocol import runtime_data_digest
from trustpod.protocol.runtime_data import device_runtime_data_object

#: A GPU attestation policy over the local verifier's claims (upstream's default GPU policy
#: reads NRAS claims only): hardware affirmed by the verified chain, executables by every
#: measurement being a reference value ``nvidia_measurement_<index>``, configuration by the
#: driver version.
GPU_POLICY = """package policy
import rego.v1
default hardware := 97
default executables := 33
default configuration := 36
trust_claims := {"instance-identity": 0, "configuration": configuration,
  "executables": executables, "file-system": 0, "hardware": hardware,
  "runtime-opaque": 0, "storage-opaque": 0, "sourced-data": 0}
hardware := 2 if {
  input.nvidia.arch == "Hopper"
  input.nvidia.config.fwid
}
executables := 2 if {
  count(input.nvidia.measurements) > 0
  every idx, value in input.nvidia.measurements {
    value in query_reference_value(sprintf("nvidia_measurement_%s", [idx]))
  }
}
configuration := 2 if {
  input.nvidia.config.driver_version in query_reference_value("allowed_driver_versions")
}
extensions := []
"""


def _register(core: KbsCore, values: dict[str, Any]) -> None:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    core.register_reference_value({"version": "0.1.0", "type": "sample", "payload": payload})


@pytest.fixture(scope="module")
def gpu(tmp_path_factory: pytest.TempPathFactory) -> tuple[EmulatedGpu, Path]:
    g = EmulatedGpu.create()
    d = tmp_path_factory.mktemp("gpu")
    g.save(d)
    return g, d / "root.pem"


def _kbs(tmp: Path, extra: str) -> Iterator[tuple[str, KbsCore]]:
    text = f"""
[http_server]
insecure_http = true
[attestation_service]
timeout = 5
[storage_backend]
storage_type = "Sqlite"
[storage_backend.backends.sqlite]
path = "{tmp / "kbs.sqlite"}"
{extra}
"""
    config = parse_config(tomllib.loads(text), tmp / "kbs-config.toml")
    app, core = builtin_kbs(config, clock=FixedClock(time.time()))
    core.attestation.set_policy("default_gpu", GPU_POLICY)
    with serve(app) as url:
        yield url, core


@pytest.fixture
def kbs(tmp_path: Path, gpu: tuple[EmulatedGpu, Path]) -> Iterator[tuple[str, KbsCore]]:
    yield from _kbs(tmp_path, f'[trustpod]\ninsecure_emulated_roots = ["{gpu[1]}"]\n')


def _attest(url: str, device: EmulatedGpu, *, bind_to: str | None = None) -> httpx.Client:
    """RCAR with sample CPU evidence + GPU additional evidence; returns the attested client."""
    h = httpx.Client(base_url=url, timeout=10)
    r = h.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""})
    assert r.status_code == 200, r.text
    nonce = r.json()["nonce"]
    jwk = TeeKeyPair.generate_ec().public_jwk()
    device_digest = jcs_digest(device_runtime_data_object(bind_to or nonce, jwk), "sha384")
    additional = json.dumps({"nvidia": device.evidence(device_digest)})
    digest = runtime_data_digest(nonce, jwk, additional)
    body = {
        "runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
        "tee-evidence": {
            "primary_evidence": {"svn": "1", "report_data": base64.b64encode(digest).decode()},
            "additional_evidence": additional,
        },
    }
    h.last = h.post("/kbs/v0/attest", json=body)  # type: ignore[attr-defined]
    return h


def _references(core: KbsCore, device: EmulatedGpu) -> None:
    _register(core, {f"nvidia_measurement_{i}": [v.hex()] for i, v in device.measurements.items()})
    _register(core, {"allowed_driver_versions": [device.driver_version]})


def test_two_submods_and_both_gate_the_resource(
    kbs: tuple[str, KbsCore], gpu: tuple[EmulatedGpu, Path]
) -> None:
    url, core = kbs
    device = gpu[0]
    _references(core, device)
    core.set_resource("default/gpu/key", b"model-key")
    h = _attest(url, device)
    r = h.last  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text
    claims = jwt.decode(r.json()["token"], options={"verify_signature": False})
    assert sorted(claims["submods"]) == ["cpu0", "gpu0"]
    gpu0 = claims["submods"]["gpu0"]
    assert gpu0["ear.status"] == "affirming"
    tv = gpu0["ear.trustworthiness-vector"]
    assert tv["hardware"] == 2 and tv["executables"] == 2 and tv["configuration"] == 2
    evidence = gpu0["ear.veraison.annotated-evidence"]["nvidia"]
    assert evidence["arch"] == "Hopper" and evidence["uuid"] == device.uuid
    assert claims["submods"]["cpu0"]["ear.status"] == "affirming"
    assert h.get("/kbs/v0/resource/default/gpu/key").status_code == 200
    # the emulated GPU root is counted per attestation (warned once at start)
    assert 'reason="nvidia.emulated_root"' in h.get("/metrics").text
    h.close()


def test_gpu_not_affirming_denies_the_resource(
    kbs: tuple[str, KbsCore], gpu: tuple[EmulatedGpu, Path]
) -> None:
    url, core = kbs
    device = gpu[0]
    _register(core, {"allowed_driver_versions": [device.driver_version]})  # no measurements
    core.set_resource("default/gpu/key", b"model-key")
    h = _attest(url, device)
    r = h.last  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text
    claims = jwt.decode(r.json()["token"], options={"verify_signature": False})
    assert claims["submods"]["gpu0"]["ear.status"] != "affirming"
    assert claims["submods"]["cpu0"]["ear.status"] == "affirming"
    got = h.get("/kbs/v0/resource/default/gpu/key")
    assert got.status_code in (401, 403), got.text
    h.close()
    # with the reference values registered, the same flow gets the key
    _references(core, device)
    h = _attest(url, device)
    assert h.last.status_code == 200  # type: ignore[attr-defined]
    assert h.get("/kbs/v0/resource/default/gpu/key").status_code == 200
    h.close()


def test_gpu_bound_to_another_nonce_refused(
    kbs: tuple[str, KbsCore], gpu: tuple[EmulatedGpu, Path]
) -> None:
    url, _ = kbs
    h = _attest(url, gpu[0], bind_to=base64.b64encode(b"x" * 32).decode())
    assert h.last.status_code == 401, h.last.text  # type: ignore[attr-defined]
    assert "nonce" in h.last.text  # type: ignore[attr-defined]
    h.close()


def test_emulated_gpu_refused_without_configured_root(
    tmp_path: Path, gpu: tuple[EmulatedGpu, Path]
) -> None:
    for url, _ in _kbs(tmp_path, ""):
        h = _attest(url, gpu[0])
        assert h.last.status_code == 401, h.last.text  # type: ignore[attr-defined]
        h.close()


def test_additional_evidence_parsing() -> None:
    assert parse_additional_evidence("", "sample") == {}
    for bad in ("[]", "{", '{"nvidia": {}, "nvidia": {}}', '{"sample": {}}'):
        with pytest.raises(EvidenceError) as exc:
            parse_additional_evidence(bad, "sample")
        assert exc.value.reason == "attestation.additional_evidence"
    with pytest.raises(EvidenceError):
        parse_additional_evidence(json.dumps({str(i): {} for i in range(9)}), "sample")


def test_guest_client_sends_gpu_as_additional_evidence(
    kbs: tuple[str, KbsCore], gpu: tuple[EmulatedGpu, Path]
) -> None:
    url, core = kbs
    device = gpu[0]
    _references(core, device)
    core.set_resource("default/gpu/key", b"model-key")
    attester = NvidiaAttester(EmulatedSource(device))
    client = KbsClient(url, SampleAttester(), device_attesters=[attester], max_retries=1)
    with client:
        assert client.get_resource("default/gpu/key") == b"model-key"
        claims = jwt.decode(client.get_token(), options={"verify_signature": False})
    assert sorted(claims["submods"]) == ["cpu0", "gpu0"]
    assert all(s["ear.status"] == "affirming" for s in claims["submods"].values())


def test_no_gpu_detection_and_emulated_from_environment(
    tmp_path: Path, gpu: tuple[EmulatedGpu, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    found = detect_gpu(tmp_path / "nvidia0")
    assert not found.available and found.reason.startswith("no GPU")
    monkeypatch.delenv("TRUSTPOD_EMULATED_GPU", raising=False)
    if not detect_gpu().available:
        assert NvidiaAttester.from_environment() is None
    attester = NvidiaAttester.from_environment(str(gpu[1].parent))
    assert attester is not None
    ev = attester.get_evidence(bytes(48))
    assert ev["device_evidence_list"][0]["arch"] == "HOPPER"
    with pytest.raises(UnsupportedAttesterFeature):
        attester.bind_init_data(bytes(32))


def test_emulated_azure_cvm_plus_emulated_gpu(
    tmp_path: Path, gpu: tuple[EmulatedGpu, Path]
) -> None:
    """az-snp-vtpm (emulated Azure CVM, software vTPM) + GPU in one appraisal: two submods, the
    GPU bound to the same nonce and TEE key; both emulated roots counted as insecure."""
    from trustpod._internal.clock import SystemClock
    from trustpod.attestation.ear import EarTokenSettings
    from trustpod.attestation.service import AttestationService
    from trustpod.collateral.wiring import build_verifiers
    from trustpod.guest.emulator.cvm import EmulatedAzureCvm
    from trustpod.rvps import ReferenceValueStore
    from trustpod.storage.memory import MemoryStore
    from trustpod.verifiers.base import VerifierSettings

    device = gpu[0]
    cvm = EmulatedAzureCvm.create(tmp_path / "cvm", backend="software").boot()
    try:
        store, clock = MemoryStore(), SystemClock()
        roots = (*cvm.vendor.emulated_roots, device.root_der)
        registry = build_verifiers(
            VerifierSettings(insecure_emulated_roots=roots), ("az-snp-vtpm", "nvidia")
        )
        rvps = ReferenceValueStore(store, clock)
        service = AttestationService(store, registry, EarTokenSettings(), clock, rvps=rvps)
        service.set_policy("default_gpu", GPU_POLICY)
        jwk = TeeKeyPair.generate_ec().public_jwk()
        nonce = base64.b64encode(b"n" * 32).decode()
        device_digest = jcs_digest(device_runtime_data_object(nonce, jwk), "sha384")
        additional = json.dumps({"nvidia": device.evidence(device_digest)})
        runtime = {"additional-evidence": additional, "nonce": nonce, "tee-pubkey": jwk}
        evidence = cvm.attester().get_evidence(jcs_digest(runtime, "sha384"))
        result = service.appraise(
            "az-snp-vtpm", evidence, runtime, None, additional_evidence=additional
        )
    finally:
        cvm.shutdown()
    assert sorted(result.claims["submods"]) == ["cpu0", "gpu0"]
    gpu0 = result.claims["submods"]["gpu0"]["ear.veraison.annotated-evidence"]
    assert set(gpu0) == {"nvidia"}
    cpu0 = result.claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert "az-snp-vtpm" in cpu0 and cpu0["runtime_data_claims"]["additional-evidence"]
    assert set(result.insecure) == {"snp.emulated_root", "nvidia.emulated_root"}


def test_guest_runtime_attests_with_the_emulated_gpu(
    kbs: tuple[str, KbsCore], gpu: tuple[EmulatedGpu, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """``trustpod guest run`` wiring: with TRUSTPOD_EMULATED_GPU the CDH's attestation carries
    the GPU; a resource policy naming both devices releases the resource only then."""
    from trustpod.cli.initdata import build_initdata
    from trustpod.guest.run import GuestRuntime

    url, core = kbs
    _references(core, gpu[0])
    core.set_resource("default/gpu/key", b"model-key")
    d = tmp_path / "guest"
    d.mkdir()
    (d / "initdata.toml").write_text(build_initdata(url, kbs_cert=None, policy=None))
    (d / "guest.toml").write_text(f'attester = "sample"\nkey_dir = "{tmp_path / "keys"}"\n')
    core.set_resource_policy({"policy": _b64url(BOTH_DEVICES)})
    monkeypatch.delenv("TRUSTPOD_EMULATED_GPU", raising=False)
    runtime = GuestRuntime.from_dir(d)  # no GPU in the environment: CPU evidence only
    try:
        with pytest.raises(PolicyDenied):
            runtime.cdh.get_resource("kbs:///default/gpu/key")
    finally:
        runtime.close()
    monkeypatch.setenv("TRUSTPOD_EMULATED_GPU", str(gpu[1].parent))
    runtime = GuestRuntime.from_dir(d)
    try:
        assert runtime.cdh.get_resource("kbs:///default/gpu/key") == b"model-key"
    finally:
        runtime.close()


#: A resource policy that names both devices (the default one accepts any set of affirming
#: submods, so a CPU-only attestation would pass it).
BOTH_DEVICES = """package policy
import rego.v1
default allow := false
allow if {
  input.submods.cpu0["ear.status"] == "affirming"
  input.submods.gpu0["ear.status"] == "affirming"
}
"""


def _b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
