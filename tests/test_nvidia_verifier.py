"""NVIDIA GPU verifier: the CoCo CI Hopper report with its chain, every signed byte flipped,
the broken chains of the vectors, nonce binding, pinning, the emulated GPU, parser properties."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.collateral.wiring import build_verifiers
from trustpod.errors import EvidenceError, VerificationError
from trustpod.evidence.nvidia_spdm import NvidiaReport, decode_opaque
from trustpod.guest.emulator.gpu import EmulatedGpu, build_report
from trustpod.verifiers.base import VerifierSettings, VerifyInput
from trustpod.verifiers.nvidia import INSECURE_EMULATED_ROOT, NvidiaVerifier, create
from trustpod.verifiers.nvidia_chain import (
    NVIDIA_DEVICE_ROOT_SHA1,
    NVIDIA_DEVICE_ROOT_SHA256,
    DeviceChainCache,
    DeviceRoots,
    leaf_fwid,
    verify_device_chain,
)

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
#: upstream test constants (mod.rs / cert_chain.rs tests)
COCO_REPORT_DATA = bytes.fromhex(
    "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fec"
    "e279b616efefc2aae21da80cf5581250"
)
SIGNING_CERT_FWID = (
    "f5c384aebb579217a2c66b17ed0f28e6a9b8d639041acd7b"
    "4721cec004f7275494ba94bb5cdfdb3055ee051762b1f75d"
)


@pytest.fixture(scope="module")
def nv(verifier_data: Path) -> Path:
    d = verifier_data / "nvidia"
    if not (d / "hopper_coco_report1.txt").is_file():
        pytest.skip(f"NVIDIA vectors not found in {d}")
    return d


def _evidence(report: bytes | str, chain: bytes, arch: str = "HOPPER") -> dict[str, Any]:
    text = report if isinstance(report, str) else report.hex()
    return {
        "device_evidence_list": [
            {
                "arch": arch,
                "uuid": "GPU-test",
                "evidence": text,
                "certificate": base64.b64encode(chain).decode(),
            }
        ]
    }


@pytest.fixture(scope="module")
def coco(nv: Path) -> tuple[bytes, bytes]:
    report = bytes.fromhex((nv / "hopper_coco_report1.txt").read_text().strip())
    return report, (nv / "hopper_coco_certs1.txt").read_bytes()


def test_coco_ci_report_verifies_with_upstream_claim_names(coco: tuple[bytes, bytes]) -> None:
    report, chain = coco
    out = NvidiaVerifier().verify(
        _evidence(report, chain), VerifyInput(COCO_REPORT_DATA, None, NOW)
    )
    assert len(out) == 1 and out[0].tee_class == "gpu" and out[0].insecure == ()
    claims = out[0].claims
    assert set(claims) == {"arch", "uuid", "measurements", "config"}
    assert claims["arch"] == "Hopper" and claims["uuid"] == "GPU-test"
    assert len(claims["measurements"]) == 64
    assert all(len(v) == 96 for v in claims["measurements"].values())
    cfg = claims["config"]
    assert cfg["driver_version"] == "580.95.05"
    assert cfg["project"] == "1010" and cfg["project_sku"] == "0200" and cfg["chip_sku"] == "882"
    assert cfg["feature_flag"] == "SPT" and cfg["opaque_data_version"] == 1
    assert cfg["measurement_count"]["1"] == 0 and len(cfg["measurement_count"]) == 64
    leaf = x509.load_pem_x509_certificates(chain)[0]
    assert cfg["fwid"] == leaf_fwid(leaf).hex()
    # the report's request nonce is the first 32 bytes of the 48-byte runtime-data digest
    assert NvidiaReport.parse(report).request.nonce == COCO_REPORT_DATA[:32]


def test_base64_evidence_accepted(coco: tuple[bytes, bytes]) -> None:
    report, chain = coco
    ev = _evidence(base64.b64encode(report).decode(), chain)
    assert NvidiaVerifier().verify(ev, VerifyInput(COCO_REPORT_DATA, None, NOW))


def test_pinned_root_fingerprints(nv: Path) -> None:
    root = x509.load_pem_x509_certificates((nv / "hopper_cert_chain_case1.txt").read_bytes())[-1]
    der = root.public_bytes(Encoding.DER)
    assert hashlib.sha256(der).hexdigest() == NVIDIA_DEVICE_ROOT_SHA256
    assert hashlib.sha1(der).hexdigest() == NVIDIA_DEVICE_ROOT_SHA1


def test_signing_cert_fwid(nv: Path) -> None:
    leaf = x509.load_pem_x509_certificate((nv / "hopper_signing_cert.pem").read_bytes())
    assert leaf_fwid(leaf).hex() == SIGNING_CERT_FWID


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        (1, None),
        (2, "nvidia.chain_short"),
        (3, "nvidia.chain_signature"),
        (4, "nvidia.fwid_missing"),
    ],
)
def test_vector_chain_cases(nv: Path, case: int, reason: str | None) -> None:
    pem = (nv / f"hopper_cert_chain_case{case}.txt").read_bytes()
    if reason is None:
        chain = verify_device_chain(pem, DeviceRoots.default())
        assert chain.fwid.hex() == SIGNING_CERT_FWID and not chain.emulated
        return
    with pytest.raises(VerificationError) as exc:
        verify_device_chain(pem, DeviceRoots.default())
    assert exc.value.reason == reason


def test_broken_chains_refused_in_full_evidence(nv: Path, coco: tuple[bytes, bytes]) -> None:
    report, _ = coco
    for case in (2, 3, 4):
        pem = (nv / f"hopper_cert_chain_case{case}.txt").read_bytes()
        with pytest.raises(VerificationError):
            NvidiaVerifier().verify(
                _evidence(report, pem), VerifyInput(COCO_REPORT_DATA, None, NOW)
            )
    # a valid chain of another GPU: its leaf did not sign this report
    other = (nv / "hopper_cert_chain_case1.txt").read_bytes()
    with pytest.raises(VerificationError) as exc:
        NvidiaVerifier().verify(_evidence(report, other), VerifyInput(COCO_REPORT_DATA, None, NOW))
    assert exc.value.reason == "nvidia.signature"


def test_every_signed_byte_flip_refused(coco: tuple[bytes, bytes]) -> None:
    report, chain = coco
    verifier = NvidiaVerifier()
    expected = VerifyInput(COCO_REPORT_DATA, None, NOW)
    signed_len = len(NvidiaReport.parse(report).signed)
    accepted = []
    for i in range(signed_len + 96 + 1):  # signed bytes, the signature, the trailing zero
        flipped = bytearray(report)
        flipped[i] ^= 0x01
        try:
            verifier.verify(_evidence(bytes(flipped), chain), expected)
        except (VerificationError, EvidenceError):
            continue
        accepted.append(i)
    assert accepted == []


def test_nonce_bound_to_report_data(coco: tuple[bytes, bytes]) -> None:
    report, chain = coco
    other = bytes(48)
    with pytest.raises(VerificationError) as exc:
        NvidiaVerifier().verify(_evidence(report, chain), VerifyInput(other, None, NOW))
    assert exc.value.reason == "nvidia.nonce"
    # regularized: the first 32 bytes are what counts
    ok = COCO_REPORT_DATA[:32] + bytes(16)
    NvidiaVerifier().verify(_evidence(report, chain), VerifyInput(ok, None, NOW))


def test_chain_validity_and_cache(coco: tuple[bytes, bytes]) -> None:
    report, chain = coco
    cache = DeviceChainCache(max_entries=2)
    verifier = NvidiaVerifier(cache=cache)
    early = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(VerificationError) as exc:
        verifier.verify(_evidence(report, chain), VerifyInput(COCO_REPORT_DATA, None, early))
    assert exc.value.reason == "nvidia.chain_validity"
    assert len(cache) == 1  # verified once, the window re-checked on every use
    verifier.verify(_evidence(report, chain), VerifyInput(COCO_REPORT_DATA, None, NOW))
    assert len(cache) == 1


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.update(arch="BLACKWELL"), "nvidia.arch_unsupported"),
        (lambda e: e.update(arch="LS10"), "nvidia.arch_unsupported"),
        (lambda e: e.update(arch="AMPERE"), "nvidia.malformed"),
        (lambda e: e.update(evidence="@@"), "encoding.base64"),
        (lambda e: e.update(uuid=7), "nvidia.malformed"),
    ],
)
def test_device_entry_refusals(coco: tuple[bytes, bytes], mutate: Any, reason: str) -> None:
    report, chain = coco
    ev = _evidence(report, chain)
    mutate(ev["device_evidence_list"][0])
    with pytest.raises((VerificationError, EvidenceError)) as exc:
        NvidiaVerifier().verify(ev, VerifyInput(COCO_REPORT_DATA, None, NOW))
    assert exc.value.reason == reason


def test_device_list_limits(coco: tuple[bytes, bytes]) -> None:
    report, chain = coco
    one = _evidence(report, chain)["device_evidence_list"][0]
    for ev, reason in (
        ({"device_evidence_list": []}, "nvidia.malformed"),
        ({"device_evidence_list": [one] * 3}, "nvidia.too_many_devices"),
        ([], "nvidia.malformed"),
    ):
        with pytest.raises(EvidenceError) as exc:
            NvidiaVerifier(max_devices=2).verify(ev, VerifyInput(COCO_REPORT_DATA, None, NOW))
        assert exc.value.reason == reason


def test_lowercase_arch_and_registry(coco: tuple[bytes, bytes]) -> None:
    report, chain = coco
    registry = build_verifiers(VerifierSettings(), tees=("nvidia",))
    assert registry.tees == ("nvidia",)
    out = registry.verify(
        "nvidia", _evidence(report, chain, "hopper"), VerifyInput(COCO_REPORT_DATA, None, NOW)
    )
    assert out[0].claims["arch"] == "Hopper"


# -- emulated GPU ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu() -> EmulatedGpu:
    return EmulatedGpu.create()


def test_emulated_gpu_needs_configured_root(gpu: EmulatedGpu) -> None:
    rd = hashlib.sha384(b"runtime").digest()
    with pytest.raises(VerificationError) as exc:
        create(VerifierSettings()).verify(gpu.evidence(rd), VerifyInput(rd, None, NOW))
    assert exc.value.reason == "nvidia.root_not_pinned"
    v = create(VerifierSettings(insecure_emulated_roots=(gpu.root_der,)))
    out = v.verify(gpu.evidence(rd), VerifyInput(rd, None, NOW))
    assert out[0].insecure == (INSECURE_EMULATED_ROOT,)
    assert out[0].claims["config"]["vbios_version"] == "96.00.9f.00.01"
    assert out[0].claims["measurements"]["1"] == gpu.measurements[1].hex()


def test_emulated_gpu_save_load(gpu: EmulatedGpu, tmp_path: Path) -> None:
    gpu.save(tmp_path / "gpu")
    assert (tmp_path / "gpu" / "leaf.key.pem").stat().st_mode & 0o777 == 0o600
    again = EmulatedGpu.load(tmp_path / "gpu")
    rd = bytes(48)
    v = create(VerifierSettings(insecure_emulated_roots=(gpu.root_der,)))
    assert v.verify(again.evidence(rd), VerifyInput(rd, None, NOW))


def test_fwid_mismatch_refused(gpu: EmulatedGpu) -> None:
    other = EmulatedGpu(gpu.leaf_key, gpu.root_pem, gpu.chain_pem, bytes(48))
    rd = bytes(48)
    v = create(VerifierSettings(insecure_emulated_roots=(gpu.root_der,)))
    with pytest.raises(VerificationError) as exc:
        v.verify(other.evidence(rd), VerifyInput(rd, None, NOW))
    assert exc.value.reason == "nvidia.fwid_mismatch"


# -- parser properties ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_parser_raises_only_evidence_errors(data: bytes) -> None:
    try:
        NvidiaReport.parse(data)
    except EvidenceError:
        pass


_KEY = EmulatedGpu.create().leaf_key


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(st.integers(1, 255), st.binary(max_size=64), max_size=8),
    st.text(max_size=12).filter(lambda s: "\0" not in s),
    st.binary(min_size=32, max_size=32),
)
def test_built_reports_round_trip(blocks: dict[int, bytes], driver: str, nonce: bytes) -> None:
    items = [(3, driver.encode() + b"\0"), (6, bytes.fromhex("009f009601000000")), (20, bytes(48))]
    raw = build_report(_KEY, nonce, blocks, items)
    report = NvidiaReport.parse(raw)
    assert report.request.nonce == nonce
    assert report.measurements() == {str(i): v.hex() for i, v in blocks.items()}
    assert report.config()["driver_version"] == driver
    assert report.signed == raw[:-96]
    # one more byte, or one byte less, is refused
    with pytest.raises(EvidenceError):
        NvidiaReport.parse(raw + b"\x01")
    with pytest.raises(EvidenceError):
        NvidiaReport.parse(raw[:-1])


def test_opaque_refusals() -> None:
    base = struct.pack("<HH", 3, 2) + b"1\0" + struct.pack("<HH", 6, 2) + b"\x01\x02"
    assert decode_opaque(base)["vbios_version"] == "01.02"
    for bad in (
        base + struct.pack("<HH", 3, 1) + b"x",  # duplicate type
        base + struct.pack("<HH", 99, 0),  # unknown type
        base + b"\x00",  # trailing partial header
        base[:-1],  # item overruns
        struct.pack("<HH", 3, 2) + b"1\0",  # vbios missing
    ):
        with pytest.raises(EvidenceError):
            decode_opaque(bad)


def test_verifier_options_validated() -> None:
    from trustpod.errors import ConfigError

    assert create(VerifierSettings(extra={"nvidia": {"max_devices": 4}}))
    for bad in ({"max_devices": "4"}, {"max_chain_len": 0}, {"typo": 1}):
        with pytest.raises(ConfigError):
            create(VerifierSettings(extra={"nvidia": bad}))


def test_cli_verify_nvidia(
    coco: tuple[bytes, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from trustpod.cli.main import main

    report, chain = coco
    ev = tmp_path / "gpu.json"
    ev.write_text(json.dumps(_evidence(report, chain)))
    args = ["verify", "--tee", "nvidia", "--evidence", str(ev), "--report-data"]
    assert main([*args, COCO_REPORT_DATA.hex()]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["driver_version"] == "580.95.05"
    assert main([*args, "00" * 48]) != 0
    assert "[nvidia.nonce]" in capsys.readouterr().err


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        _JSON,
        st.fixed_dictionaries({"device_evidence_list": st.lists(_JSON, max_size=3)}),
        st.fixed_dictionaries(
            {
                "device_evidence_list": st.lists(
                    st.fixed_dictionaries(
                        {
                            "arch": st.sampled_from(["HOPPER", "hopper", "x"]),
                            "evidence": st.text(max_size=40),
                            "certificate": st.text(max_size=40),
                        }
                    ),
                    max_size=2,
                )
            }
        ),
    )
)
def test_evidence_json_raises_only_trustpod_errors(evidence: Any) -> None:
    try:
        NvidiaVerifier().verify(evidence, VerifyInput(bytes(48), None, NOW))
    except (EvidenceError, VerificationError):
        pass
