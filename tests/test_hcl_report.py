"""Azure HCL report: parse the real SNP and TDX reports, rebuild them byte for byte, hypothesis."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.errors import EvidenceError
from trustpod.evidence.hcl import (
    HCL_REPORT_SIZE,
    REPORT_TYPE_SNP,
    REPORT_TYPE_TDX,
    TD_REPORT_SIZE,
    HclReport,
)


@pytest.mark.parametrize(
    ("name", "report_type"), [("az-snp-vtpm", REPORT_TYPE_SNP), ("az-tdx-vtpm", REPORT_TYPE_TDX)]
)
def test_vectors_parse_and_rebuild(verifier_data: Path, name: str, report_type: int) -> None:
    raw = (verifier_data / name / "hcl-report.bin").read_bytes()
    hcl = HclReport.from_bytes(raw)
    assert hcl.report_type == report_type and hcl.signature == 0x414C4348
    assert hcl.ak_public_key().key_size == 2048
    assert set(hcl.var_data_json()) == {"keys", "vm-configuration", "user-data"}
    assert hcl.user_data() == bytes(64)  # format v1 evidence: user-data unused
    if report_type == REPORT_TYPE_SNP:
        snp = hcl.snp_report()
        assert (
            snp.report_data[:32] == hcl.var_data_sha256() == hashlib.sha256(hcl.var_data).digest()
        )
        hw = snp.to_bytes()
    else:
        hw = hcl.td_report()
        assert len(hw) == TD_REPORT_SIZE
        with pytest.raises(EvidenceError):
            hcl.snp_report()
    assert HclReport.build(hw, report_type, hcl.var_data, version=hcl.version) == raw


def test_build_rejects_bad_input() -> None:
    with pytest.raises(EvidenceError):
        HclReport.build(b"x" * 10, REPORT_TYPE_SNP, b"{}")
    with pytest.raises(EvidenceError):
        HclReport.build(bytes(TD_REPORT_SIZE), 3, b"{}")
    with pytest.raises(EvidenceError):
        HclReport.build(bytes(TD_REPORT_SIZE), REPORT_TYPE_TDX, b"x" * 2000)


def test_missing_ak_and_bad_var_data() -> None:
    hcl = HclReport.from_bytes(
        HclReport.build(bytes(TD_REPORT_SIZE), REPORT_TYPE_TDX, b'{"keys":[]}')
    )
    with pytest.raises(EvidenceError) as err:
        hcl.ak_public_key()
    assert err.value.reason == "hcl.ak_missing"
    hcl = HclReport.from_bytes(HclReport.build(bytes(TD_REPORT_SIZE), REPORT_TYPE_TDX, b"\xff"))
    with pytest.raises(EvidenceError) as err:
        hcl.user_data()
    assert err.value.reason == "hcl.var_data"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=64), st.integers(0, HCL_REPORT_SIZE + 2))
def test_random_input_raises_only_typed_errors(var_data: bytes, cut: int) -> None:
    raw = HclReport.build(bytes(TD_REPORT_SIZE), REPORT_TYPE_TDX, var_data)
    try:
        hcl = HclReport.from_bytes(raw[:cut])
        hcl.user_data()
        hcl.ak_public_key()
    except EvidenceError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=HCL_REPORT_SIZE, max_size=HCL_REPORT_SIZE))
def test_random_full_size_reports(raw: bytes) -> None:
    try:
        hcl = HclReport.from_bytes(raw)
        hcl.var_data_sha256()
        hcl.snp_report()
    except EvidenceError:
        pass
