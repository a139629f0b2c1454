"""SNP report parser/serialiser: real vectors, sev-crate JSON, builders, hypothesis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.errors import EvidenceError
from trustpod.evidence.snp import REPORT_SIZE, SIGNED_SIZE, SnpReport, SnpTcb, report_to_sev_json
from trustpod.evidence.snp_json import SnpEvidence


@pytest.fixture(scope="module")
def vcek_report(verifier_data: Path) -> bytes:
    return (verifier_data / "snp/test-report.bin").read_bytes()


@pytest.fixture(scope="module")
def vlek_report(verifier_data: Path) -> bytes:
    return (verifier_data / "snp/test-vlek-report.bin").read_bytes()


def test_v2_vector_fields(vcek_report: bytes) -> None:
    r = SnpReport.from_bytes(vcek_report)
    assert (r.version, r.vmpl, r.sig_algo) == (2, 0, 1)
    assert r.cpuid_fam_id is None and r.cpuid_mod_id is None
    assert r.reported_tcb == SnpTcb(bootloader=3, tee=0, snp=8, microcode=115)
    assert r.chip_id.hex().startswith("c38427a30d4c7af9")
    assert r.policy_bits.abi_minor == 31 and r.policy_bits.smt_allowed
    assert r.platform_bits.smt_enabled and not r.platform_bits.tsme_enabled
    assert r.to_bytes() == vcek_report
    assert r.signed_bytes() == vcek_report[:SIGNED_SIZE]


def test_v3_vector_fields(vlek_report: bytes) -> None:
    r = SnpReport.from_bytes(vlek_report)
    assert (r.version, r.vmpl, r.cpuid_fam_id, r.cpuid_mod_id) == (3, 1, 0x19, 0x01)
    assert r.reported_tcb == SnpTcb(bootloader=4, tee=0, snp=24, microcode=217)
    assert r.to_bytes() == vlek_report


@pytest.mark.parametrize("name", ["snp/test-report.bin", "snp/test-vlek-report.bin"])
def test_sev_json_round_trip(verifier_data: Path, name: str) -> None:
    raw = (verifier_data / name).read_bytes()
    obj = json.loads(json.dumps(report_to_sev_json(raw)))
    assert set(obj) >= {"version", "policy", "plat_info", "current_tcb", "signature", "chip_id"}
    assert len(obj["signature"]["r"]) == 72
    again = SnpReport.from_json(obj)
    assert again.signed_bytes() == raw[:SIGNED_SIZE]
    ev = SnpEvidence.from_json({"attestation_report": obj, "cert_chain": None})
    assert ev.to_json()["attestation_report"] == obj


def test_turin_tcb_layout() -> None:
    tcb = SnpTcb(bootloader=3, tee=1, snp=8, microcode=15, fmc=5)
    r = SnpReport.build(version=3, cpuid_fam_id=0x1A, cpuid_mod_id=0x02, reported_tcb=tcb)
    raw = r.to_bytes()
    assert raw[0x180:0x188] == bytes([5, 3, 1, 8, 0, 0, 0, 15])
    assert SnpReport.from_bytes(raw).reported_tcb == tcb
    milan = SnpReport.build(version=3, cpuid_fam_id=0x19, reported_tcb=SnpTcb(3, 1, 8, 15))
    assert milan.to_bytes()[0x180:0x188] == bytes([3, 1, 0, 0, 0, 0, 8, 15])


def test_v5_mitigation_vectors_and_replace() -> None:
    r = SnpReport.build(version=5, launch_mit_vector=7, current_mit_vector=9)
    again = SnpReport.from_bytes(r.to_bytes())
    assert (again.launch_mit_vector, again.current_mit_vector) == (7, 9)
    changed = again.replace(report_data=b"\x01" * 64)
    assert changed.report_data == b"\x01" * 64 and changed.version == 5
    signed = changed.with_signature(123, 456)
    assert int.from_bytes(signed.signature_r, "little") == 123
    assert signed.signed_bytes() == changed.signed_bytes()
    assert signed.signature_der().startswith(b"\x30")


@pytest.mark.parametrize(
    ("patch", "reason"),
    [({"version": 1}, "snp.report_version"), ({"report_data": b"x"}, "snp.build")],
)
def test_build_rejects_bad_fields(patch: dict[str, object], reason: str) -> None:
    with pytest.raises(EvidenceError) as err:
        SnpReport.build(**patch)
    assert err.value.reason == reason


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=REPORT_SIZE + 8))
def test_random_bytes_raise_only_evidence_error(data: bytes) -> None:
    try:
        SnpReport.from_bytes(data)
    except EvidenceError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.integers(0, REPORT_SIZE - 1), st.integers(2, 5), st.binary(min_size=8, max_size=8))
def test_truncated_and_random_versions(cut: int, version: int, junk: bytes) -> None:
    raw = bytearray(SnpReport.build(version=version).to_bytes())
    raw[0x180:0x188] = junk
    with pytest.raises(EvidenceError):
        SnpReport.from_bytes(bytes(raw[:cut]))
    SnpReport.from_bytes(bytes(raw))  # any TCB bytes parse


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.text(max_size=4),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_json_parser_rejects_garbage_with_typed_errors(value: object) -> None:
    with pytest.raises(EvidenceError):
        SnpEvidence.from_json(value)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["version", "policy", "chip_id", "signature", "reported_tcb", "current"]),
    json_values,
)
def test_json_field_mutation_typed_errors(vcek_report_field: str, value: object) -> None:
    obj = report_to_sev_json(SnpReport.build().to_bytes())
    obj[vcek_report_field] = value
    try:
        SnpReport.from_json(obj)
    except EvidenceError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 5), st.binary(min_size=REPORT_SIZE - 4, max_size=REPORT_SIZE - 4))
def test_any_parseable_report_round_trips_exactly(version: int, body: bytes) -> None:
    raw = version.to_bytes(4, "little") + body
    assert SnpReport.from_bytes(raw).to_bytes() == raw
