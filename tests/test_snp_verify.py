"""SNP verifier: real vectors with expected claims, every signed byte flipped, chain pinning,
emulated roots, bindings, validity with a fake clock, the chain cache."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from test_snp_support import NOW, EmulatedAmd, load_amd_ca
from trustpod.collateral.ports import MemoryAmdCollateral
from trustpod.errors import DependencyError, EvidenceError, VerificationError
from trustpod.evidence.snp import SIGNED_SIZE, SnpReport
from trustpod.verifiers.base import VerifierSettings, VerifyInput
from trustpod.verifiers.roots import (
    AMD_ARK_SHA256,
    AMD_ASK_SHA256,
    AMD_ASVK_SHA256,
    der_fingerprint,
)
from trustpod.verifiers.snp import SnpVerifier, create, product_from_cpuid, verify_snp
from trustpod.verifiers.snp_chain import ChainCache, SnpChain, TrustAnchors, ext_hwid, load_cert

TODAY = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def amd_ca(trustee_vectors: Path) -> MemoryAmdCollateral:
    return load_amd_ca(trustee_vectors)


@pytest.fixture(scope="module")
def verifier(amd_ca: MemoryAmdCollateral) -> SnpVerifier:
    return SnpVerifier(root_sources=[amd_ca], allowed_vmpls=frozenset({0, 1}))


def _evidence(report: bytes, cert_type: str, der: bytes) -> dict[str, object]:
    return {
        "attestation_report": SnpReport.from_bytes(report).to_sev_json(),
        "cert_chain": [{"cert_type": cert_type, "data": list(der)}],
    }


def test_pinned_fingerprints_match_vendor_files(trustee_vectors: Path) -> None:
    for product in ("Milan", "Genoa", "Turin"):
        pem = trustee_vectors / "deps/verifier/src/snp" / f"{product.lower()}_ask_ark_asvk.pem"
        ask, ark, asvk = x509.load_pem_x509_certificates(pem.read_bytes())
        fps = [der_fingerprint(c.public_bytes(Encoding.DER)) for c in (ask, ark, asvk)]
        assert fps == [AMD_ASK_SHA256[product], AMD_ARK_SHA256[product], AMD_ASVK_SHA256[product]]


def test_cpuid_product_table() -> None:
    assert product_from_cpuid(0x19, 0x01) == "Milan"
    assert product_from_cpuid(0x19, 0x11) == "Genoa"
    assert product_from_cpuid(0x19, 0xA0) == "Genoa"
    assert product_from_cpuid(0x1A, 0x02) == "Turin"
    assert product_from_cpuid(0x19, 0x50) is None and product_from_cpuid(0x17, 0) is None


def test_vcek_report_v2_verifies(verifier: SnpVerifier, verifier_data: Path) -> None:
    raw = (verifier_data / "snp/test-report.bin").read_bytes()
    vcek = (verifier_data / "snp/test-vcek.der").read_bytes()
    report = SnpReport.from_bytes(raw)
    [out] = verifier.verify(
        _evidence(raw, "VCEK", vcek), VerifyInput(report.report_data, None, TODAY)
    )
    c = out.claims
    assert out.tee_class == "cpu"
    assert c["reported_tcb_bootloader"] == 3 and c["reported_tcb_microcode"] == 115
    assert c["policy_abi_minor"] == 31 and c["policy_smt_allowed"] is True
    assert c["measurement"].startswith("a1f3930413247bb3")
    assert c["chip_id"] == report.chip_id.hex() and c["init_data"] == "00" * 32
    assert c["report_data"].startswith("ec6c52d7533cc2c4")
    # the raw .bin form (CLI) and an explicit 32-byte expected value (zero padded to 64)
    # the raw .bin form (CLI): the VCEK comes from a VCEK source keyed by hwID and TCB
    store = MemoryAmdCollateral(ca=dict(verifier.root_sources[0].ca))  # type: ignore[attr-defined]
    store.add_vcek(report.chip_id.hex(), _tcb(report), vcek)
    from_bin = SnpVerifier(vcek_sources=[store], root_sources=[store])
    assert from_bin.verify(raw, VerifyInput(report.report_data, None, TODAY))[0].claims == c
    [again] = verifier.verify(
        _evidence(raw, "VCEK", vcek), VerifyInput(report.report_data[:32], None, TODAY)
    )
    assert again.claims == c


def test_vlek_report_verifies_in_validity_window(
    verifier: SnpVerifier, verifier_data: Path
) -> None:
    raw = (verifier_data / "snp/test-vlek-report.bin").read_bytes()
    vlek = (verifier_data / "snp/test-vlek.der").read_bytes()
    rd = SnpReport.from_bytes(raw).report_data
    [out] = verifier.verify(_evidence(raw, "VLEK", vlek), VerifyInput(rd, None, NOW))
    assert out.claims["reported_tcb_snp"] == 24
    # the VLEK expired on 2025-12-10: today's clock refuses it
    with pytest.raises(VerificationError) as err:
        verifier.verify(_evidence(raw, "VLEK", vlek), VerifyInput(rd, None, TODAY))
    assert err.value.reason == "snp.cert_validity"
    # upstream's default: VMPL 0 only
    strict = SnpVerifier(root_sources=verifier.root_sources)
    with pytest.raises(VerificationError) as err:
        strict.verify(_evidence(raw, "VLEK", vlek), VerifyInput(rd, None, NOW))
    assert err.value.reason == "snp.vmpl"


def test_genoa_evidence_json(verifier: SnpVerifier, trustee_vectors: Path) -> None:
    path = trustee_vectors / "attestation-service/tests/e2e/evidence.json"
    if not path.exists():
        pytest.skip("attestation-service/tests/e2e/evidence.json not in the vectors")
    ev = json.loads(path.read_text())
    rd = bytes(ev["attestation_report"]["report_data"])
    [out] = verifier.verify(ev, VerifyInput(rd, None, TODAY))
    assert out.claims["reported_tcb_snp"] == 23


def test_every_signed_byte_flip_is_rejected(
    verifier_data: Path, amd_ca: MemoryAmdCollateral
) -> None:
    raw = (verifier_data / "snp/test-report.bin").read_bytes()
    vcek = (verifier_data / "snp/test-vcek.der").read_bytes()
    ca = amd_ca.get_ca_certs("Milan")
    assert ca.ark and ca.ask
    chain, cache = SnpChain(vcek, ca.ask, ca.ark), ChainCache()
    good = SnpReport.from_bytes(raw)
    expected = VerifyInput(good.report_data, None, TODAY)
    verify_snp(good, chain, expected, cache=cache)
    reasons: dict[str, int] = {}
    for i in range(SIGNED_SIZE):
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        with pytest.raises((VerificationError, EvidenceError)) as err:
            verify_snp(SnpReport.from_bytes(bytes(flipped)), chain, expected, cache=cache)
        reasons[err.value.reason] = reasons.get(err.value.reason, 0) + 1
    assert reasons["snp.signature"] >= SIGNED_SIZE - 8
    assert set(reasons) <= {"snp.signature", "snp.report_version", "snp.sig_algo", "snp.product"}
    assert len(cache) == 1  # chain verified once


def test_signature_and_tcb_checks(verifier_data: Path, amd_ca: MemoryAmdCollateral) -> None:
    raw = (verifier_data / "snp/test-report.bin").read_bytes()
    ca = amd_ca.get_ca_certs("Milan")
    assert ca.ark and ca.ask
    good = SnpReport.from_bytes(raw)
    # a different VCEK (the az-snp-vtpm one, same ASK) fails the report signature
    other = load_cert(_pem_der(verifier_data / "az-snp-vtpm/vcek.pem"), "VCEK")
    chain = SnpChain(other.public_bytes(Encoding.DER), ca.ask, ca.ark)
    with pytest.raises(VerificationError) as err:
        verify_snp(good, chain, VerifyInput(good.report_data, None, TODAY))
    assert err.value.reason == "snp.signature"


@pytest.mark.parametrize("name", ["test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"])
def test_hwid_both_encodings(verifier_data: Path, name: str) -> None:
    cert = load_cert((verifier_data / "snp" / name).read_bytes(), "VCEK")
    hwid = ext_hwid(cert)
    assert hwid is not None and len(hwid) == 64
    assert hwid == ext_hwid(
        load_cert((verifier_data / "snp/test-vcek-invalid-legacy.der").read_bytes(), "x")
    )


def test_unpinned_root_refused_and_emulated_root_accepted(caplog: pytest.LogCaptureFixture) -> None:
    amd = EmulatedAmd.create(octet_hwid=True)
    report = amd.report(report_data=b"r" * 64, host_data=b"h" * 32)
    chain = SnpChain(amd.der("vcek"), amd.der("ask"), amd.der("ark"))
    expected = VerifyInput(b"r" * 64, b"h" * 32, NOW)
    with pytest.raises(VerificationError) as err:
        verify_snp(report, chain, expected)
    assert err.value.reason == "snp.ark_not_pinned"
    anchors = TrustAnchors.default(amd.roots())
    with caplog.at_level(logging.WARNING):
        claims = verify_snp(report, chain, expected, trusted_arks=anchors)
    # warned once at start (VerifierRegistry), not per report; marked in TeeClaims.insecure
    assert "EMULATED" not in caplog.text and claims["init_data"] == "68" * 32
    cases = [
        (VerifyInput(b"x", None, NOW), "snp.report_data"),
        (VerifyInput(b"r" * 64, b"other", NOW), "snp.host_data"),
        (VerifyInput(b"r" * 64, None, dt.datetime(2031, 1, 1, tzinfo=dt.UTC)), "snp.cert_validity"),
    ]
    for exp, reason in cases:
        with pytest.raises(VerificationError) as err:
            verify_snp(report, chain, exp, trusted_arks=anchors)
        assert err.value.reason == reason
    for bad, reason in [
        (amd.report(chip_id=bytes(64)), "snp.chip_id"),
        (amd.report(reported_tcb=report.reported_tcb.__class__(1, 0, 24, 219)), "snp.tcb_mismatch"),
        (amd.report(cpuid_fam_id=0x1A, cpuid_mod_id=1), "snp.product"),
        (amd.report(cpuid_fam_id=0x17), "snp.product"),
        (amd.report(vmpl=2), "snp.vmpl"),
    ]:
        with pytest.raises(VerificationError) as err:
            verify_snp(bad, chain, VerifyInput(bad.report_data, None, NOW), trusted_arks=anchors)
        assert err.value.reason == reason


def test_verifier_gathers_emulated_chain_from_settings() -> None:
    amd = EmulatedAmd.create()
    report = amd.report(report_data=b"q" * 64)
    mem = MemoryAmdCollateral()
    mem.add_vcek(report.chip_id.hex(), _tcb(report), amd.der("vcek"))
    v = SnpVerifier(vcek_sources=[mem], insecure_emulated_roots=amd.roots())
    ev = {"attestation_report": report.to_sev_json(), "cert_chain": None}
    assert v.verify(ev, VerifyInput(b"q" * 64, None, NOW))[0].claims["report_data"] == "71" * 64
    with pytest.raises(DependencyError) as err:
        SnpVerifier(insecure_emulated_roots=amd.roots()).verify(ev, VerifyInput(b"q", None, NOW))
    assert err.value.reason == "snp.collateral_missing"
    default = create(VerifierSettings())
    with pytest.raises(DependencyError):
        default.verify(ev, VerifyInput(b"q" * 64, None, NOW))


def _tcb(report: SnpReport):  # type: ignore[no-untyped-def]
    from trustpod.collateral.ports import AmdTcb

    t = report.reported_tcb
    return AmdTcb(t.bootloader, t.tee, t.snp, t.microcode, t.fmc)


def _pem_der(path: Path) -> bytes:
    """DER of the first certificate of a PEM file (without parsing the others)."""
    import base64

    text = path.read_text()
    body = text.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]
    return base64.b64decode("".join(body.split()))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_der_helpers_raise_only_verification_errors(data: bytes) -> None:
    from trustpod.verifiers.snp_chain import _der_tlv

    for tag in (0x02, 0x04):
        try:
            _der_tlv(data, tag, "fuzz")
        except VerificationError:
            pass
