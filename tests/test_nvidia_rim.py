"""NVIDIA RIMs: our own signed SWID-tag RIMs (XMLDSig ecdsa-sha384 via signxml) checked
against the emulated GPU's report; tampered/untrusted/expired RIMs refused; the index mapping
(RIM index i = SPDM block i+1); the offline store and the RIM-service fetcher over a loopback
HTTP server."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("signxml")

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.signer import XMLSigner

from trustpod.collateral.intel_pcs import HttpxGet
from trustpod.collateral.nvidia import (
    DirectoryRimSource,
    RimServiceSource,
    load_rim_roots,
    rim_checker,
)
from trustpod.errors import EvidenceError, VerificationError
from trustpod.guest.emulator.gpu import EmulatedGpu
from trustpod.verifiers.base import VerifierSettings, VerifyInput
from trustpod.verifiers.nvidia import create
from trustpod.verifiers.nvidia_rim import (
    RimChecker,
    RimRoots,
    compare_rims,
    rim_ids,
    verify_rim,
)

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
SWID = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
TCG = "https://trustedcomputinggroup.org/resource/tcg-reference-integrity-manifest-rim-information-model/"
H384 = "http://www.w3.org/2001/04/xmlenc#sha384"


def _cert(
    cn: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey],
    *, ca: bool, days: int = 3650,
) -> x509.Certificate:  # fmt: skip
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    iname = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])])
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(iname)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer[1], hashes.SHA384())
    )


class RimSigner:
    """Test RIM authority: root -> CA -> signer (all P-384)."""

    def __init__(self, signer_days: int = 3650) -> None:
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        ca_key = ec.generate_private_key(ec.SECP384R1())
        self.key = ec.generate_private_key(ec.SECP384R1())
        self.root = _cert(
            "TEST RIM Root CA", self.root_key, ("TEST RIM Root CA", self.root_key), ca=True
        )
        self.ca = _cert("TEST RIM CA", ca_key, ("TEST RIM Root CA", self.root_key), ca=True)
        self.signer = _cert(
            "TEST RIM L4 Signer", self.key, ("TEST RIM CA", ca_key), ca=False, days=signer_days
        )

    @property
    def roots(self) -> RimRoots:
        return RimRoots((self.root.public_bytes(serialization.Encoding.DER),))

    def sign(self, version: str, measurements: dict[int, list[bytes]], active: set[int]) -> bytes:
        root = etree.Element(f"{{{SWID}}}SoftwareIdentity", nsmap={None: SWID, "ns2": H384})
        root.set("name", "GH100")
        root.set("version", "1.0")
        meta = etree.SubElement(root, f"{{{SWID}}}Meta", nsmap={"ns1": TCG})
        meta.set("colloquialVersion", version)
        meta.set("edition", "GPU")
        meta.set("product", "GH100")
        meta.set(f"{{{TCG}}}PlatformManufacturerStr", "NVIDIA Corporation")
        payload = etree.SubElement(root, f"{{{SWID}}}Payload")
        for index, values in sorted(measurements.items()):
            r = etree.SubElement(payload, f"{{{SWID}}}Resource")
            r.set("type", "Measurement")
            r.set("index", str(index))
            r.set("active", "True" if index in active else "False")
            r.set("alternatives", str(len(values)))
            for i, v in enumerate(values):
                r.set(f"{{{H384}}}Hash{i}", v.hex())
            r.set("size", "48")
        pem = [c.public_bytes(serialization.Encoding.PEM).decode() for c in (self.signer, self.ca)]
        signed = XMLSigner(
            signature_algorithm=SignatureMethod.ECDSA_SHA384,
            digest_algorithm=DigestAlgorithm.SHA384,
        ).sign(root, key=self.key, cert=pem)
        return bytes(etree.tostring(signed))


@pytest.fixture(scope="module")
def authority() -> RimSigner:
    return RimSigner()


@pytest.fixture(scope="module")
def gpu() -> EmulatedGpu:
    return EmulatedGpu.create()


def _rims(authority: RimSigner, gpu: EmulatedGpu) -> tuple[bytes, bytes]:
    """Driver RIM covers RIM indexes 0-3 (SPDM 1-4), VBIOS RIM 4-7 (SPDM 5-8)."""
    golden = {i - 1: v for i, v in gpu.measurements.items()}  # RIM index = SPDM index - 1
    driver = authority.sign(gpu.driver_version, {i: [golden[i]] for i in range(8)}, set(range(4)))
    vbios = authority.sign(
        "96.00.9F.00.01", {i: [bytes(48), golden[i]] for i in range(8)}, set(range(4, 8))
    )
    return driver, vbios


def _store(tmp: Path, authority: RimSigner, gpu: EmulatedGpu, config: dict[str, Any]) -> None:
    (tmp / "nvidia").mkdir(parents=True, exist_ok=True)
    (tmp / "nvidia" / "rim-roots.pem").write_bytes(
        authority.root.public_bytes(serialization.Encoding.PEM)
    )
    driver, vbios = _rims(authority, gpu)
    store = DirectoryRimSource(tmp)
    d_id, v_id = rim_ids(config)
    store.store(d_id, driver)
    store.store(v_id, vbios)


def _config(gpu: EmulatedGpu) -> dict[str, Any]:
    settings = VerifierSettings(insecure_emulated_roots=(gpu.root_der,))
    out = create(settings).verify(gpu.evidence(bytes(48)), VerifyInput(bytes(48), None, NOW))
    return dict(out[0].claims["config"])


def test_rim_ids_follow_nvtrust_names(gpu: EmulatedGpu) -> None:
    assert rim_ids(_config(gpu)) == (
        "NV_GPU_DRIVER_GH100_550.90.07",
        "NV_GPU_VBIOS_1010_0200_882_96009F0001",
    )


def test_signed_rim_parses(authority: RimSigner, gpu: EmulatedGpu) -> None:
    driver, _ = _rims(authority, gpu)
    rim = verify_rim(driver, authority.roots, NOW)
    assert rim.version == gpu.driver_version and rim.product == "GH100"
    assert rim.manufacturer == "NVIDIA Corporation" and len(rim.measurements) == 8
    assert sorted(rim.active()) == [0, 1, 2, 3]


def test_verifier_with_rim_store_affirms_matching_report(
    tmp_path: Path, authority: RimSigner, gpu: EmulatedGpu
) -> None:
    _store(tmp_path, authority, gpu, _config(gpu))
    settings = VerifierSettings(collateral_dir=tmp_path, insecure_emulated_roots=(gpu.root_der,))
    from trustpod.collateral.wiring import create_nvidia

    claims = (
        create_nvidia(settings)
        .verify(gpu.evidence(bytes(48)), VerifyInput(bytes(48), None, NOW))[0]
        .claims
    )
    assert claims["measres"] == "success" and claims["x-trustpod-rim-mismatches"] == []
    for kind in ("driver", "vbios"):
        assert claims[f"x-nvidia-gpu-{kind}-rim-fetched"] is True
        assert claims[f"x-nvidia-gpu-{kind}-rim-signature-verified"] is True
        assert claims[f"x-nvidia-gpu-{kind}-rim-version-match"] is True


def test_mismatch_and_missing_rim(tmp_path: Path, authority: RimSigner, gpu: EmulatedGpu) -> None:
    config = _config(gpu)
    measurements = {str(i): v.hex() for i, v in gpu.measurements.items()}
    driver, vbios = (verify_rim(x, authority.roots, NOW) for x in _rims(authority, gpu))
    assert compare_rims(driver, vbios, measurements, config).success
    changed = dict(measurements, **{"3": "11" * 48})
    result = compare_rims(driver, vbios, changed, config)
    assert not result.success and result.mismatches == (3,)
    del changed["6"]
    assert compare_rims(driver, vbios, changed, config).missing == (6,)
    # offset 0 (RIM index = SPDM index) would not match: the mapping matters
    shifted = {str(int(k) - 1): v for k, v in measurements.items()}
    assert not compare_rims(driver, vbios, shifted, config).success
    # overlapping active indexes refused
    with pytest.raises(VerificationError) as exc:
        compare_rims(driver, driver, measurements, config)
    assert exc.value.reason == "nvidia.rim_overlap"
    # nothing in the store: fetched false, measres fail
    checker = RimChecker(DirectoryRimSource(tmp_path), authority.roots)
    claims = checker.claims(measurements, config, NOW)
    assert claims["measres"] == "fail" and claims["x-nvidia-gpu-driver-rim-fetched"] is False


def test_tampered_untrusted_expired_rims_refused(authority: RimSigner, gpu: EmulatedGpu) -> None:
    driver, _ = _rims(authority, gpu)
    tampered = driver.replace(b'active="False"', b'active="True"', 1)
    assert tampered != driver
    with pytest.raises(VerificationError) as exc:
        verify_rim(tampered, authority.roots, NOW)
    assert exc.value.reason == "nvidia.rim_signature"
    with pytest.raises(VerificationError) as exc:
        verify_rim(driver, RimSigner().roots, NOW)
    assert exc.value.reason == "nvidia.rim_root"
    with pytest.raises(VerificationError) as exc:
        verify_rim(driver, authority.roots, dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
    assert exc.value.reason == "nvidia.rim_validity"
    with pytest.raises(EvidenceError):
        verify_rim(b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>", authority.roots, NOW)
    with pytest.raises(EvidenceError):
        verify_rim(b"x" * 100, authority.roots, NOW, max_bytes=50)


class _FakeRimService(BaseHTTPRequestHandler):
    rims: dict[str, bytes] = {}
    hits: list[str] = []

    def do_GET(self) -> None:
        rim_id = self.path.rsplit("/", 1)[-1]
        type(self).hits.append(self.path)
        body = self.rims.get(rim_id)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps({"id": rim_id, "rim": base64.b64encode(body).decode()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def rim_service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeRimService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_rim_service_fetcher_writes_the_store(
    tmp_path: Path, authority: RimSigner, gpu: EmulatedGpu, rim_service: str
) -> None:
    config = _config(gpu)
    d_id, v_id = rim_ids(config)
    driver, vbios = _rims(authority, gpu)
    _FakeRimService.rims = {d_id: driver, v_id: vbios}
    _FakeRimService.hits = []
    (tmp_path / "nvidia").mkdir()
    (tmp_path / "nvidia" / "rim-roots.pem").write_bytes(
        authority.root.public_bytes(serialization.Encoding.PEM)
    )
    settings = VerifierSettings(
        collateral_dir=tmp_path,
        insecure_emulated_roots=(gpu.root_der,),
        extra={"nvidia": {"rim_service_url": rim_service}},
    )
    checker = rim_checker(settings, HttpxGet(timeout_s=5))
    assert checker is not None
    measurements = {str(i): v.hex() for i, v in gpu.measurements.items()}
    assert checker.claims(measurements, config, NOW)["measres"] == "success"
    assert sorted(_FakeRimService.hits) == sorted([f"/v1/rim/{d_id}", f"/v1/rim/{v_id}"])
    assert DirectoryRimSource(tmp_path).rim(d_id) == driver  # written back: offline next time
    missing = RimServiceSource(None, rim_service, HttpxGet(timeout_s=5))
    assert missing.rim("NV_GPU_DRIVER_GH100_0.0") is None
    assert load_rim_roots(tmp_path) == authority.roots.roots
    assert rim_checker(VerifierSettings()) is None  # no collateral dir: no RIM checks


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400).map(lambda t: f"<a>{t}</a>".encode()))
def test_rim_verification_raises_only_trustpod_errors(data: bytes) -> None:
    try:
        verify_rim(data, RimRoots(()), NOW)
    except (EvidenceError, VerificationError):
        pass
