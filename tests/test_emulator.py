"""Emulated Azure CVM: vendor chain shape, evidence layout vs a real Azure vector, PCR 8 binding,
swtpm and software back ends giving the same structure."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from trustpod.errors import ConfigError, EvidenceError
from trustpod.guest.attesters.az_vtpm import HCL_REPORT_SIZE
from trustpod.guest.emulator.cvm import EmulatedAzureCvm
from trustpod.guest.emulator.hcl import HCL_HEADER, HCL_REQUEST_HEADER
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


def split_hcl(hcl: bytes) -> tuple[tuple[Any, ...], bytes, tuple[Any, ...], bytes]:
    header = HCL_HEADER.unpack_from(hcl, 0)
    snp = hcl[HCL_HEADER.size : HCL_HEADER.size + 1184]
    req_off = HCL_HEADER.size + 1184
    request = HCL_REQUEST_HEADER.unpack_from(hcl, req_off)
    start = req_off + HCL_REQUEST_HEADER.size
    return header, snp, request, hcl[start : start + request[4]]


def check_az_evidence(ev: dict[str, Any], report_data: bytes) -> dict[str, Any]:
    """Independent re-check of every binding the az-snp-vtpm verifier makes (trustee §5.3)."""
    hcl = base64.urlsafe_b64decode(ev["hcl_report"])
    _, snp, _, var_data = split_hcl(hcl)
    var = json.loads(var_data)
    assert hashlib.sha256(var_data).digest() == snp[0x50:0x70]  # (4)
    assert bytes.fromhex(var["user-data"]).startswith(report_data)  # (5)
    jwk = var["keys"][0]
    assert jwk["kid"] == "HCLAkPub"

    def num(s: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(s + "=="), "big")

    ak = rsa.RSAPublicNumbers(num(jwk["e"]), num(jwk["n"])).public_key()
    msg = bytes.fromhex(ev["tpm_quote"]["message"])
    ak.verify(
        bytes.fromhex(ev["tpm_quote"]["signature"]), msg, padding.PKCS1v15(), hashes.SHA256()
    )  # (1)
    pcrs = [bytes.fromhex(p) for p in ev["tpm_quote"]["pcrs"]]
    assert msg.endswith(hashlib.sha256(b"".join(pcrs)).digest())  # (3)
    assert struct.pack(">H", len(report_data)) + report_data in msg  # (2) extraData, exact
    vcek = x509.load_der_x509_certificate(base64.urlsafe_b64decode(ev["vcek"]))
    r = int.from_bytes(snp[0x2A0 : 0x2A0 + 72], "little")
    s = int.from_bytes(snp[0x2A0 + 72 : 0x2A0 + 144], "little")
    pub = vcek.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(utils.encode_dss_signature(r, s), snp[:0x2A0], ec.ECDSA(hashes.SHA384()))  # (6)
    return var


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
    hcl = base64.urlsafe_b64decode(ev["hcl_report"])
    real_hcl = base64.urlsafe_b64decode(real["hcl_report"])
    assert len(hcl) == len(real_hcl) == HCL_REPORT_SIZE
    assert ev["hcl_report"].endswith("=")  # padded base64url, like serde_with
    header, snp, request, var_data = split_hcl(hcl)
    real_header, real_snp, real_request, real_var = split_hcl(real_hcl)
    assert header[0] == real_header[0] == b"HCLA"
    assert header[1:2] + header[3:] == real_header[1:2] + real_header[3:]
    assert request[1:4] == real_request[1:4]  # version, report type SNP, hash type SHA-256
    assert request[0] == request[4] + HCL_REQUEST_HEADER.size
    assert hcl[header[2] :] == bytes(len(hcl) - header[2])  # zero padding after report_size
    assert list(json.loads(var_data)) == list(json.loads(real_var))
    assert struct.unpack_from("<I", snp, 0x30) == struct.unpack_from("<I", real_snp, 0x30)
    var = check_az_evidence(ev, REPORT_DATA)
    assert var["user-data"] == REPORT_DATA.ljust(64, b"\0").hex().upper()


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
    hcl_hw = split_hcl(base64.urlsafe_b64decode(ev_hw["hcl_report"]))
    hcl_sw = split_hcl(base64.urlsafe_b64decode(ev_sw["hcl_report"]))
    assert hcl_hw[0][:2] == hcl_sw[0][:2] and hcl_hw[2][1:4] == hcl_sw[2][1:4]
    assert list(json.loads(hcl_hw[3])) == list(json.loads(hcl_sw[3]))
    assert pid is not None and not Path(f"/proc/{pid}").exists()  # swtpm stopped
