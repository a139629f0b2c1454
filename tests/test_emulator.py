"""Emulated Azure CVM: vendor chain shape, evidence layout vs a real Azure vector, PCR 8 binding,
swtpm and software back ends giving the same structure."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from trustpod.errors import ConfigError, EvidenceError, TrustpodError
from trustpod.evidence.az import AzEvidence
from trustpod.evidence.hcl import HCL_REPORT_SIZE, HclReport
from trustpod.evidence.snp import SnpReport
from trustpod.evidence.tpm import TpmsAttest, pcr_digest
from trustpod.guest.emulator.cvm import EmulatedAzureCvm
from trustpod.guest.emulator.swtpm import swtpm_binary
from trustpod.guest.emulator.vendor import (
    AMD_OID_HWID,
    AMD_OID_SPL,
    EmulatedVendor,
    load_or_create_vendor,
)
from trustpod.initdata import pcr8_after_extend

REPORT_DATA = hashlib.sha384(b"runtime data").digest()
INITDATA = hashlib.sha256(b'version = "0.1.0"\nalgorithm = "sha256"\n').digest()
needs_swtpm = pytest.mark.skipif(swtpm_binary() is None, reason="swtpm binary not installed")


@pytest.fixture(scope="session")
def vendor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("emulated-vendor")
    load_or_create_vendor(path)
    return path


@pytest.fixture(scope="session")
def vendor(vendor_dir: Path) -> EmulatedVendor:
    return EmulatedVendor.load(vendor_dir)


def _cvm(vendor: EmulatedVendor, backend: str, initdata: bytes | None = INITDATA) -> Any:
    return EmulatedAzureCvm(vendor, backend=backend).boot(initdata)


def check_az_evidence(ev: dict[str, Any], report_data: bytes) -> HclReport:
    """Parse back with parsers and re-check every binding of trustee §5.3 independently."""
    parsed = AzEvidence.from_json(ev)
    assert parsed.to_json() == ev  # byte-for-byte round trip through the format module
    hcl = HclReport.from_bytes(parsed.hcl_report)
    snp = hcl.snp_report()
    assert hcl.var_data_sha256() == snp.report_data[:32]  # (4)
    assert hcl.user_data().startswith(report_data)  # (5)
    ak = hcl.ak_public_key()
    msg = parsed.tpm_quote.message
    ak.verify(parsed.tpm_quote.signature, msg, padding.PKCS1v15(), hashes.SHA256())  # (1)
    attest = TpmsAttest.from_bytes(msg)
    assert attest.extra_data == report_data  # (2) exact
    assert attest.pcr_digest == pcr_digest(parsed.tpm_quote.pcrs)  # (3)
    assert parsed.vcek is not None
    vcek = x509.load_der_x509_certificate(parsed.vcek)
    pub = vcek.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(snp.signature_der(), snp.signed_bytes(), ec.ECDSA(hashes.SHA384()))  # (6)
    assert snp.vmpl == 0 and snp.chip_id == _hwid(vcek)
    return hcl


def _hwid(cert: x509.Certificate) -> bytes:
    ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(AMD_OID_HWID)).value
    assert isinstance(ext, x509.UnrecognizedExtension)
    return ext.value


# -- vendor chain ------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Parsed a serial number")
def test_vendor_chain_shape_matches_amd(vendor: EmulatedVendor, verifier_data: Path) -> None:
    vendor.vcek.verify_directly_issued_by(vendor.ask)
    vendor.ask.verify_directly_issued_by(vendor.ark)
    vendor.ark.verify_directly_issued_by(vendor.ark)
    for cert in (vendor.ark, vendor.ask, vendor.vcek):
        assert "EMULATED" in cert.subject.rfc4514_string()
        assert isinstance(cert.signature_algorithm_parameters, padding.PSS)
    ark_pub = vendor.ark.public_key()
    assert isinstance(ark_pub, rsa.RSAPublicKey) and ark_pub.key_size == 4096
    vcek_pub = vendor.vcek.public_key()
    assert isinstance(vcek_pub, ec.EllipticCurvePublicKey) and vcek_pub.curve.name == "secp384r1"
    real = x509.load_pem_x509_certificates((verifier_data / "az-snp-vtpm/vcek.pem").read_bytes())[0]
    real_ext = {e.oid.dotted_string: e.value for e in real.extensions}
    ours = {e.oid.dotted_string: e.value for e in vendor.vcek.extensions}
    assert set(ours) == set(real_ext)  # same OIDs as a real KDS VCEK
    for oid, value in ours.items():  # same DER types (INTEGER / IA5String / raw hwID)
        assert isinstance(value, x509.UnrecognizedExtension)
        real_value = real_ext[oid]
        assert isinstance(real_value, x509.UnrecognizedExtension)
        assert value.value[:1] == real_value.value[:1] or oid == AMD_OID_HWID
    hwid = ours[AMD_OID_HWID]
    assert isinstance(hwid, x509.UnrecognizedExtension) and hwid.value == vendor.chip_id
    spl = ours[AMD_OID_SPL["microcode"]]
    assert isinstance(spl, x509.UnrecognizedExtension)
    assert spl.value == bytes([2, 1, vendor.tcb.microcode])


def test_vendor_save_load_roundtrip(vendor: EmulatedVendor, vendor_dir: Path) -> None:
    assert (vendor_dir / "ark.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    roots = x509.load_pem_x509_certificates((vendor_dir / "roots.pem").read_bytes())
    assert [c.subject for c in roots] == [vendor.ark.subject, vendor.ask.subject]
    assert (vendor_dir / "vcek.key.pem").stat().st_mode & 0o077 == 0
    again = load_or_create_vendor(vendor_dir)
    assert again.ark_der == vendor.ark_der and again.chip_id == vendor.chip_id


def test_vendor_load_broken_dir_is_config_error(tmp_path: Path) -> None:
    (tmp_path / "vendor.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        EmulatedVendor.load(tmp_path)
    assert err.value.reason == "emulator.vendor_load"


def test_vendor_rejects_bad_chip_id() -> None:
    with pytest.raises(ConfigError):
        EmulatedVendor.generate(chip_id=b"short", now=dt.datetime.now(dt.UTC))


# -- evidence format ---------------------------------------------------------------------------
def test_software_evidence_layout_matches_real_azure(
    vendor: EmulatedVendor, verifier_data: Path
) -> None:
    real = json.loads((verifier_data / "az-snp-vtpm/evidence-v2.json").read_text())
    with _cvm(vendor, "software") as cvm:
        ev = cvm.attester().get_evidence(REPORT_DATA)
    assert list(ev) == list(real)
    assert list(ev["tpm_quote"]) == list(real["tpm_quote"])
    assert ev["version"] == real["version"] == 2
    assert len(ev["tpm_quote"]["pcrs"]) == len(real["tpm_quote"]["pcrs"]) == 24
    assert len(ev["tpm_quote"]["signature"]) == len(real["tpm_quote"]["signature"])
    hcl_raw = base64.urlsafe_b64decode(ev["hcl_report"])
    real_raw = base64.urlsafe_b64decode(real["hcl_report"])
    assert len(hcl_raw) == len(real_raw) == HCL_REPORT_SIZE
    assert ev["hcl_report"].endswith("=")  # padded base64url, like serde_with
    hcl = check_az_evidence(ev, REPORT_DATA)
    real_hcl = HclReport.from_bytes(real_raw)
    for name in ("signature", "version", "request_type", "status", "request_version"):
        assert getattr(hcl, name) == getattr(real_hcl, name), name
    assert (hcl.report_type, hcl.hash_type) == (real_hcl.report_type, real_hcl.hash_type)
    assert hcl.data_size == len(hcl.var_data) + 20 and hcl_raw[hcl.report_size :] == bytes(
        HCL_REPORT_SIZE - hcl.report_size
    )  # zero padding after report_size
    assert list(hcl.var_data_json()) == list(real_hcl.var_data_json())
    assert hcl.var_data_json()["user-data"] == REPORT_DATA.ljust(64, b"\0").hex().upper()
    snp, real_snp = hcl.snp_report(), real_hcl.snp_report()
    assert snp.vmpl == real_snp.vmpl == 0 and snp.sig_algo == real_snp.sig_algo
    assert SnpReport.from_bytes(snp.to_bytes()) == snp


def test_software_quote_parses_with_tpm2_pytss(vendor: EmulatedVendor) -> None:
    tss = pytest.importorskip("tpm2_pytss")
    with _cvm(vendor, "software") as cvm:
        ev = cvm.attester().get_evidence(REPORT_DATA)
    attest, _ = tss.TPMS_ATTEST.unmarshal(bytes.fromhex(ev["tpm_quote"]["message"]))
    assert bytes(attest.extraData) == REPORT_DATA
    assert attest.attested.quote.pcrSelect.count == 1


def test_pcr8_binding_and_refusal(vendor: EmulatedVendor) -> None:
    with _cvm(vendor, "software") as cvm:
        assert cvm.initdata_pcr() == pcr8_after_extend(INITDATA)
        ev = cvm.attester().get_evidence(REPORT_DATA)
        assert ev["tpm_quote"]["pcrs"][8] == pcr8_after_extend(INITDATA).hex()
        with pytest.raises(EvidenceError) as err:
            cvm.attester().bind_init_data(hashlib.sha384(b"x").digest())
        assert err.value.reason == "tpm.digest_size" and "sha256" in (err.value.fix or "")
        cvm.extend_pcr(11, hashlib.sha256(b"cmdline").digest())
        assert cvm.device.pcr_read([11])[0] != bytes(32)
        cvm.attester().extend_runtime_measurement(hashlib.sha256(b"event").digest(), 23)
        with pytest.raises(TrustpodError) as locality:
            cvm.attester().extend_runtime_measurement(hashlib.sha256(b"event").digest(), 17)
        assert locality.value.reason == "tpm.pcr_locality"


def test_boot_refuses_non_sha256_initdata(vendor: EmulatedVendor) -> None:
    with pytest.raises(EvidenceError) as err:
        EmulatedAzureCvm(vendor, backend="software").boot(hashlib.sha384(b"toml").digest())
    assert "32-byte SHA-256" in err.value.message


def test_report_data_too_long_refused(vendor: EmulatedVendor) -> None:
    with _cvm(vendor, "software") as cvm, pytest.raises(EvidenceError):
        cvm.attester().get_evidence(bytes(65))


def test_not_booted_is_config_error(vendor: EmulatedVendor) -> None:
    cvm = EmulatedAzureCvm(vendor, backend="software")
    with pytest.raises(ConfigError):
        cvm.attester()
    with pytest.raises(ConfigError):
        EmulatedAzureCvm(vendor, backend="qemu")


@pytest.mark.swtpm
@needs_swtpm
def test_swtpm_and_software_give_the_same_structure(vendor: EmulatedVendor) -> None:
    with _cvm(vendor, "swtpm") as hw, _cvm(vendor, "software") as sw:
        assert hw.tcti and hw.tcti.startswith("swtpm:host=127.0.0.1,port=")
        ev_hw = hw.attester().get_evidence(REPORT_DATA)
        ev_sw = sw.attester().get_evidence(REPORT_DATA)
        pid = hw._swtpm.pid
    check_az_evidence(ev_hw, REPORT_DATA)
    assert ev_hw["tpm_quote"]["pcrs"] == ev_sw["tpm_quote"]["pcrs"]  # same PCR bank semantics
    msg_hw = bytes.fromhex(ev_hw["tpm_quote"]["message"])
    msg_sw = bytes.fromhex(ev_sw["tpm_quote"]["message"])
    assert len(msg_hw) == len(msg_sw) and msg_hw[:6] == msg_sw[:6]
    assert msg_hw[-40:] == msg_sw[-40:]  # PCR selection + digest
    check_az_evidence(ev_sw, REPORT_DATA)
    hcl_hw = HclReport.from_bytes(base64.urlsafe_b64decode(ev_hw["hcl_report"]))
    hcl_sw = HclReport.from_bytes(base64.urlsafe_b64decode(ev_sw["hcl_report"]))
    assert (hcl_hw.version, hcl_hw.report_type) == (hcl_sw.version, hcl_sw.report_type)
    assert len(hcl_hw.var_data) == len(hcl_sw.var_data)  # same AK size, same JSON shape
    assert list(hcl_hw.var_data_json()) == list(hcl_sw.var_data_json())
    assert TpmsAttest.from_bytes(msg_hw).pcr_select == TpmsAttest.from_bytes(msg_sw).pcr_select
    assert pid is not None and not Path(f"/proc/{pid}").exists()  # swtpm stopped


@pytest.mark.swtpm
@needs_swtpm
def test_swtpm_refuses_drtm_pcr_like_software(vendor: EmulatedVendor) -> None:
    with _cvm(vendor, "swtpm") as hw:
        with pytest.raises(TrustpodError) as err:
            hw.device.pcr_extend(17, bytes(32))
        assert err.value.reason == "tpm.pcr_locality"
        hw.extend_pcr(23, hashlib.sha256(b"x").digest())


def test_concurrent_evidence_requests_stay_bound(vendor: EmulatedVendor) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with _cvm(vendor, "software") as cvm:
        attester = cvm.attester()
        nonces = [hashlib.sha384(bytes([i])).digest() for i in range(16)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(attester.get_evidence, nonces))
    for nonce, ev in zip(nonces, results, strict=True):
        check_az_evidence(ev, nonce)


@pytest.mark.swtpm
@needs_swtpm
def test_swtpm_start_failure_is_dependency_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trustpod.errors import DependencyError
    from trustpod.guest.emulator import swtpm as swtpm_mod

    bogus = tmp_path / "swtpm"
    bogus.write_text("#!/bin/sh\nexit 3\n")
    bogus.chmod(0o755)
    monkeypatch.setattr(swtpm_mod, "swtpm_binary", lambda: str(bogus))
    proc = swtpm_mod.SwtpmProcess()
    with pytest.raises(DependencyError) as err:
        proc.start()
    assert err.value.reason == "swtpm.start" and proc.state_dir is None and proc.pid is None
