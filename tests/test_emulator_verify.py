"""Emulated CVM evidence through production ``az-snp-vtpm`` verifier (and ``tpm``).

The guest package never imports the verifiers; the tests do, to show the emulated evidence takes
the same code path as real Azure evidence and is refused without ``insecure_emulated_roots``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from trustpod.errors import TrustpodError, VerificationError
from trustpod.guest.emulator.cvm import EmulatedAzureCvm
from trustpod.guest.emulator.swtpm import swtpm_binary
from trustpod.guest.emulator.vendor import EmulatedVendor, load_or_create_vendor
from trustpod.initdata import pcr8_after_extend

az = pytest.importorskip("trustpod.verifiers.az_snp_vtpm")
from trustpod.verifiers.base import VerifierSettings, VerifyInput  # noqa: E402

REPORT_DATA = hashlib.sha384(b"kbs nonce + tee key").digest()
INITDATA = hashlib.sha256(b"initdata toml").digest()


@pytest.fixture(scope="module")
def vendor(tmp_path_factory: pytest.TempPathFactory) -> EmulatedVendor:
    return load_or_create_vendor(tmp_path_factory.mktemp("vendor"))


@pytest.fixture(scope="module")
def evidence(vendor: EmulatedVendor) -> dict[str, Any]:
    with EmulatedAzureCvm(vendor, backend="software").boot(INITDATA) as cvm:
        ev: dict[str, Any] = cvm.attester().get_evidence(REPORT_DATA)
        return ev


def _expected(init: bytes | None = INITDATA) -> VerifyInput:
    return VerifyInput(REPORT_DATA, init, dt.datetime.now(dt.UTC))


def _verifier(vendor: EmulatedVendor | None) -> Any:
    roots = vendor.emulated_roots if vendor else ()
    return az.create(VerifierSettings(insecure_emulated_roots=roots))


def test_emulated_evidence_verifies_with_emulated_roots(
    vendor: EmulatedVendor, evidence: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        claims = _verifier(vendor).verify(evidence, _expected())
    assert len(claims) == 1
    assert claims[0].insecure == ("snp.emulated_root",)  # counted per attestation, not logged
    assert "EMULATED" not in caplog.text
    body = claims[0].claims
    assert body["init_data"] == pcr8_after_extend(INITDATA).hex()
    assert body["report_data"] == REPORT_DATA.hex()
    assert body["tpm"]["pcr08"] == pcr8_after_extend(INITDATA).hex()


def test_default_verifier_refuses_emulated_root(evidence: dict[str, Any]) -> None:
    # Offline and without emulated roots there is no ASK/ARK for the chain: refused.
    with pytest.raises(TrustpodError) as err:
        _verifier(None).verify(evidence, _expected())
    assert err.value.reason in ("snp.collateral_missing", "snp.ark_not_pinned")


@pytest.mark.filterwarnings("ignore:Parsed a serial number")
def test_verifier_with_real_amd_roots_refuses_emulated_vcek(
    evidence: dict[str, Any], trustee_vectors: Path
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from trustpod.collateral.ports import AmdCaCerts, MemoryAmdCollateral
    from trustpod.verifiers.snp import SnpVerifier

    pem = (trustee_vectors / "deps/verifier/src/snp/milan_ask_ark_asvk.pem").read_bytes()
    by_cn = {
        c.subject.rfc4514_string().split(",")[0]: c.public_bytes(Encoding.DER)
        for c in x509.load_pem_x509_certificates(pem)
    }
    real = AmdCaCerts(ark=by_cn["CN=ARK-Milan"], ask=by_cn["CN=SEV-Milan"])
    snp = SnpVerifier(root_sources=[MemoryAmdCollateral.from_ca({"Milan": real})])
    with pytest.raises(VerificationError) as err:
        az.AzSnpVtpmVerifier(snp).verify(evidence, _expected())
    assert err.value.reason == "snp.vek_signature"


def test_wrong_initdata_and_wrong_nonce_refused(
    vendor: EmulatedVendor, evidence: dict[str, Any]
) -> None:
    verifier = _verifier(vendor)
    with pytest.raises(VerificationError):
        verifier.verify(evidence, _expected(hashlib.sha256(b"other initdata").digest()))
    with pytest.raises(VerificationError):
        verifier.verify(evidence, VerifyInput(bytes(48), INITDATA, dt.datetime.now(dt.UTC)))


@pytest.mark.parametrize("field", ["hcl_report", "tpm_quote.message"])
def test_flipped_signed_bytes_refused(
    vendor: EmulatedVendor, evidence: dict[str, Any], field: str
) -> None:
    ev = json.loads(json.dumps(evidence))
    if field == "hcl_report":
        raw = bytearray(base64.urlsafe_b64decode(ev["hcl_report"]))
        raw[0x20 + 0x90] ^= 1  # SNP measurement, inside the VCEK-signed bytes
        ev["hcl_report"] = base64.urlsafe_b64encode(bytes(raw)).decode()
    else:
        msg = bytearray(bytes.fromhex(ev["tpm_quote"]["message"]))
        msg[-1] ^= 1
        ev["tpm_quote"]["message"] = msg.hex()
    with pytest.raises(TrustpodError):
        _verifier(vendor).verify(ev, _expected())


@pytest.mark.swtpm
@pytest.mark.skipif(swtpm_binary() is None, reason="swtpm binary not installed")
def test_swtpm_emulated_evidence_verifies(vendor: EmulatedVendor, tmp_path: Path) -> None:
    with EmulatedAzureCvm(vendor, backend="swtpm").boot(INITDATA) as cvm:
        ev = cvm.attester().get_evidence(REPORT_DATA)
    claims = _verifier(vendor).verify(ev, _expected())
    assert claims[0].claims["init_data"] == pcr8_after_extend(INITDATA).hex()
    with pytest.raises(TrustpodError):
        _verifier(None).verify(ev, _expected())
