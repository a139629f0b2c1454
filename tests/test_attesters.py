"""File-protocol attesters (configfs-tsm SNP/TDX, sev-guest ioctl), generic TPM, detection."""

from __future__ import annotations

import base64
import ctypes
import hashlib
import shutil
import struct
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.errors import (
    ConfigError,
    DependencyError,
    EvidenceError,
    TrustpodError,
    VerificationError,
)
from trustpod.guest.attesters.base import Attester, UnsupportedAttesterFeature
from trustpod.guest.attesters.detect import detect_tee, make_attester
from trustpod.guest.attesters.snp import (
    SNP_CERT_GUIDS,
    SNP_GET_REPORT,
    SevGuestDevice,
    SnpAttester,
    SnpSettings,
    parse_cert_table,
)
from trustpod.guest.attesters.tdx import TdxAttester, TdxSettings
from trustpod.guest.attesters.tpm import TPM_REPORT_DATA_SIZE, TpmAttester
from trustpod.guest.attesters.tsm import TsmReport
from trustpod.guest.emulator.softtpm import SoftwareTpm
from trustpod.initdata import pcr8_after_extend

REPORT_DATA = hashlib.sha384(b"nonce").digest()


class FakeKernel:
    """Plays the kernel's configfs-tsm: ``mkdir`` creates an entry with ``provider`` and
    ``generation`` and a pre-computed ``outblob`` (a REAL report read from the vectors)."""

    def __init__(self, provider: str, outblob: bytes, auxblob: bytes | None = None) -> None:
        self.provider, self.outblob, self.auxblob = provider, outblob, auxblob
        self.generation = 1
        self.entries: list[Path] = []

    def __call__(self, root: Path) -> Path:
        entry = root / f"entry{len(self.entries)}"
        entry.mkdir()
        (entry / "provider").write_text(self.provider + "\n")
        (entry / "generation").write_text(f"{self.generation}\n")
        (entry / "outblob").write_bytes(self.outblob)
        if self.auxblob is not None:
            (entry / "auxblob").write_bytes(self.auxblob)
        self.entries.append(entry)
        return entry


def cert_table(entries: list[tuple[uuid.UUID, bytes]]) -> bytes:
    header_len = 24 * (len(entries) + 1)
    header, body = b"", b""
    for guid, data in entries:
        header += guid.bytes + struct.pack("<II", header_len + len(body), len(data))
        body += data
    return header + bytes(24) + body


# -- configfs-tsm ------------------------------------------------------------------------------
def test_tsm_protocol_with_real_snp_report(tmp_path: Path, verifier_data: Path) -> None:
    report = (verifier_data / "snp/test-report.bin").read_bytes()
    kernel = FakeKernel("sev_guest", report)
    tsm = TsmReport("sev_guest", root=tmp_path, make_entry=kernel)
    res = tsm.generate(REPORT_DATA.ljust(64, b"\0"), privlevel=0)
    assert res.outblob == report and res.auxblob is None
    entry = kernel.entries[0]
    assert (entry / "inblob").read_bytes() == REPORT_DATA.ljust(64, b"\0")
    assert (entry / "privlevel").read_text() == "0"


@pytest.mark.parametrize(
    ("provider", "generation", "reason"),
    [("tdx_guest", 1, "tsm.provider"), ("sev_guest", 2, "tsm.race")],
)
def test_tsm_refuses_wrong_provider_and_races(
    tmp_path: Path, provider: str, generation: int, reason: str
) -> None:
    kernel = FakeKernel(provider, b"x" * 10)
    kernel.generation = generation
    with pytest.raises(DependencyError) as err:
        TsmReport("sev_guest", root=tmp_path, make_entry=kernel).generate(b"\1" * 64)
    assert err.value.reason == reason


def test_tsm_limits(tmp_path: Path) -> None:
    tsm = TsmReport("sev_guest", root=tmp_path, make_entry=FakeKernel("sev_guest", b"x" * 100))
    with pytest.raises(EvidenceError):
        tsm.generate(b"")
    with pytest.raises(EvidenceError):
        tsm.generate(bytes(65))
    small = TsmReport(
        "sev_guest",
        root=tmp_path,
        make_entry=FakeKernel("sev_guest", b"x" * 100),
        max_blob_bytes=50,
    )
    with pytest.raises(EvidenceError):
        small.generate(b"\1")
    with pytest.raises(DependencyError) as err:
        TsmReport("sev_guest", root=tmp_path / "absent").generate(b"\1")
    assert err.value.reason == "tsm.unavailable"


# -- SNP ---------------------------------------------------------------------------------------
def _snp(tmp_path: Path, report: bytes, aux: bytes | None = None) -> SnpAttester:
    kernel = FakeKernel("sev_guest", report, aux)
    tsm = TsmReport("sev_guest", root=tmp_path, make_entry=kernel)
    return SnpAttester(SnpSettings(tsm_root=tmp_path), tsm=tsm)


def test_snp_evidence_from_tsm_with_cert_chain(tmp_path: Path, verifier_data: Path) -> None:
    pytest.importorskip("trustpod.evidence.snp_json")
    report = (verifier_data / "snp/test-report.bin").read_bytes()
    vcek = (verifier_data / "snp/test-vcek.der").read_bytes()
    vcek_guid = next(g for g, n in SNP_CERT_GUIDS.items() if n == "VCEK")
    attester = _snp(tmp_path, report, cert_table([(vcek_guid, vcek)]))
    assert isinstance(attester, Attester)
    ev = attester.get_evidence(REPORT_DATA)
    assert set(ev) == {"attestation_report", "cert_chain"}
    assert ev["cert_chain"] == [{"cert_type": "VCEK", "data": list(vcek)}]
    assert bytes(ev["attestation_report"]["chip_id"]) == report[0x1A0:0x1E0]


def test_snp_bind_init_data_compares_host_data(tmp_path: Path, verifier_data: Path) -> None:
    report = (verifier_data / "snp/test-report.bin").read_bytes()
    attester = _snp(tmp_path, report)
    attester.bind_init_data(report[0xC0:0xE0])  # HOST_DATA of the real report
    with pytest.raises(VerificationError) as err:
        attester.bind_init_data(hashlib.sha256(b"other").digest())
    assert err.value.reason == "snp.init_data_mismatch"
    with pytest.raises(UnsupportedAttesterFeature):
        attester.extend_runtime_measurement(bytes(32), 17)


def test_sev_guest_ioctl_structure(tmp_path: Path, verifier_data: Path) -> None:
    report = (verifier_data / "snp/test-report.bin").read_bytes()
    assert SNP_GET_REPORT == 0xC0205300  # _IOWR('S', 0, 32-byte struct snp_guest_request_ioctl)
    seen: dict[str, object] = {}

    def fake_ioctl(fd: int, request: int, arg: bytearray) -> None:
        version, req, resp, _ = struct.unpack("<B7xQQQ", bytes(arg))
        seen.update(request=request, version=version)
        req_bytes = ctypes.string_at(req, 96)
        seen["user_data"], seen["vmpl"] = req_bytes[:64], struct.unpack_from("<I", req_bytes, 64)
        ctypes.memmove(resp, struct.pack("<II24x", 0, len(report)) + report, 32 + len(report))

    dev_path = tmp_path / "sev-guest"
    dev_path.write_bytes(b"")
    device = SevGuestDevice(dev_path, ioctl=fake_ioctl)
    assert device.get_report(REPORT_DATA.ljust(64, b"\0"), 0) == report
    assert seen["request"] == SNP_GET_REPORT and seen["version"] == 1
    assert seen["user_data"] == REPORT_DATA.ljust(64, b"\0") and seen["vmpl"] == (0,)

    def failing_ioctl(fd: int, request: int, arg: bytearray) -> None:
        raise OSError(5, "EIO")

    with pytest.raises(DependencyError):
        SevGuestDevice(dev_path, ioctl=failing_ioctl).get_report(bytes(64), 0)

    # No configfs-tsm: the attester falls back to the ioctl; detection finds the device.
    settings = SnpSettings(tsm_root=tmp_path / "no-tsm", sev_guest_path=dev_path)
    attester = SnpAttester(settings, device=device)
    raw, aux = attester.report(REPORT_DATA)
    assert raw == report and aux is None
    assert detect_tee({"sev_guest_path": str(dev_path), "tcti": "device:/nonexistent"}) == "snp"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_cert_table_parser_only_raises_evidence_error(blob: bytes) -> None:
    try:
        parse_cert_table(blob)
    except EvidenceError:
        pass


# -- TDX ---------------------------------------------------------------------------------------
def _tdx(tmp_path: Path, quote: bytes, ccel: bytes | None = None) -> TdxAttester:
    root = tmp_path / "tsm"
    root.mkdir()
    ccel_path = tmp_path / "CCEL"
    if ccel is not None:
        ccel_path.write_bytes(ccel)
    tsm = TsmReport("tdx_guest", root=root, make_entry=FakeKernel("tdx_guest", quote))
    settings = TdxSettings(tsm_root=root, ccel_path=ccel_path, measurements_dir=tmp_path / "m")
    return TdxAttester(settings, tsm=tsm)


def test_tdx_evidence_and_mrconfigid(tmp_path: Path, verifier_data: Path) -> None:
    quote = (verifier_data / "tdx_quote_6.dat").read_bytes()
    ccel = (verifier_data / "CCEL_data_ovmf").read_bytes()
    attester = _tdx(tmp_path, quote, ccel)
    ev = attester.get_evidence(REPORT_DATA)
    assert base64.b64decode(ev["quote"]) == quote
    assert base64.b64decode(ev["cc_eventlog"]) == ccel
    from trustpod.evidence.tdx import parse_td_quote

    mr_config_id = parse_td_quote(quote).body.mr_config_id
    assert any(mr_config_id)
    attester.bind_init_data(mr_config_id)
    with pytest.raises(VerificationError):
        attester.bind_init_data(hashlib.sha384(b"other").digest())
    with pytest.raises(DependencyError):
        attester.extend_runtime_measurement(bytes(32), 17)
    other = tmp_path / "b"
    other.mkdir()
    assert _tdx(other, quote).get_evidence(b"")["cc_eventlog"] is None


# -- generic TPM -------------------------------------------------------------------------------
def test_tpm_evidence_format_matches_vector(verifier_data: Path) -> None:
    import json

    real = json.loads((verifier_data / "tpm_evidence.json").read_text())
    tpm = SoftwareTpm()
    attester = TpmAttester(tpm)
    digest = hashlib.sha256(b"initdata").digest()
    attester.bind_init_data(digest)
    ev = attester.get_evidence(REPORT_DATA)
    assert set(real) <= set(ev) and set(ev["tpm_quote"]) == set(real["tpm_quote"])
    assert ev["ak_public"].startswith("MIIBIjAN") and real["ak_public"].startswith("MIIBIjAN")
    size = TPM_REPORT_DATA_SIZE
    assert base64.b64decode(ev["report_data"]) == REPORT_DATA[:size].ljust(size, b"\0")
    sig = base64.b64decode(ev["tpm_quote"]["signature"])
    real_sig = base64.b64decode(real["tpm_quote"]["signature"])
    assert sig[:4] == real_sig[:4] and len(sig) == len(real_sig)  # RSASSA / SHA-256, 2048 bits
    assert ev["tpm_quote"]["pcrs"][8] == pcr8_after_extend(digest).hex()
    with pytest.raises(EvidenceError):
        attester.bind_init_data(hashlib.sha384(b"x").digest())


# -- detection and factory ---------------------------------------------------------------------
def test_detect_without_tee_gives_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    real_exists: Callable[[Path], bool] = Path.exists
    monkeypatch.setattr(
        Path, "exists", lambda p: False if str(p).startswith(("/dev", "/sys")) else real_exists(p)
    )
    with pytest.raises(DependencyError) as err:
        detect_tee({"tcti": "device:/dev/tpmrm0"})
    assert err.value.reason == "attester.no_tee"
    assert "no TEE found" in err.value.message and "sample" in (err.value.fix or "")


def test_make_attester_names_and_settings(tmp_path: Path) -> None:
    assert make_attester("sample").tee == "sample"
    with pytest.raises(ConfigError):
        make_attester("qemu")
    with pytest.raises(ConfigError):
        make_attester("sample", {"bogus": 1})
    snp = make_attester("snp", {"tsm_root": str(tmp_path), "vmpl": "0"})
    assert snp.tee == "snp"
    emulated = make_attester(
        "emulated-az-snp-vtpm",
        {"emulator_dir": str(tmp_path / "cvm"), "emulator_backend": "software"},
    )
    assert emulated.tee == "az-snp-vtpm"
    assert (tmp_path / "cvm/vendor/ark.pem").is_file()
    ev = emulated.get_evidence(REPORT_DATA)
    assert ev["version"] == 2
    emulated.close()  # type: ignore[attr-defined]


@pytest.mark.swtpm
@pytest.mark.skipif(shutil.which("swtpm") is None, reason="swtpm binary not installed")
def test_swtpm_generic_tpm_and_azure_detection(tmp_path: Path) -> None:
    from trustpod.guest.attesters.tpm import Tpm2PytssDevice
    from trustpod.guest.emulator.hcl import build_hcl_report, build_var_data
    from trustpod.guest.emulator.swtpm import SwtpmProcess
    from trustpod.guest.emulator.vendor import EmulatedVendor

    with SwtpmProcess() as sw:
        device = Tpm2PytssDevice(sw.tcti)
        try:
            attester = TpmAttester(device)  # no AK yet: created and persisted on first use
            ev = attester.get_evidence(REPORT_DATA)
            assert ev == attester.get_evidence(REPORT_DATA) | {"tpm_quote": ev["tpm_quote"]}
            with pytest.raises(DependencyError):
                device.nv_read(0x01400001)
            vendor = EmulatedVendor.generate()
            ak = device.create_persistent_ak(0x81000003)
            from cryptography.hazmat.primitives.serialization import load_der_public_key

            var = build_var_data(load_der_public_key(ak), bytes(64), {"tpm-enabled": True})
            hcl = build_hcl_report(
                vendor, var, measurement=bytes(48), policy=0x30000, host_data=bytes(32)
            )
            device.nv_define(0x01400001, 2048)
            device.nv_write(0x01400001, hcl[:2048])
        finally:
            device.close()
        assert detect_tee({"tcti": sw.tcti}) == "az-snp-vtpm"
        # The production factory path on this "Azure" vTPM (no paravisor: user data stays stale).
        (tmp_path / "vcek.der").write_bytes(vendor.vcek_der)
        settings = {"tcti": sw.tcti, "vcek_path": str(tmp_path / "vcek.der")}
        az = make_attester("az-snp-vtpm", settings | {"report_refresh_delay_s": "0"})
        try:
            ev = az.get_evidence(REPORT_DATA)
        finally:
            az.close()  # type: ignore[attr-defined]
        from trustpod.evidence.az import AzEvidence

        parsed = AzEvidence.from_json(ev)
        assert parsed.vcek == vendor.vcek_der and parsed.hcl_report == hcl


def test_az_tdx_vtpm_attester_with_real_hcl_and_td_quote(verifier_data: Path) -> None:
    from trustpod.evidence.az import AzEvidence
    from trustpod.guest.attesters.az_vtpm import (
        VTPM_AK_HANDLE,
        VTPM_HCL_REPORT_NV_INDEX,
        VTPM_USER_DATA_NV_INDEX,
        AzTdxVtpmAttester,
        AzVtpmSettings,
    )

    hcl = (verifier_data / "az-tdx-vtpm/hcl-report.bin").read_bytes()
    td_quote = (verifier_data / "az-tdx-vtpm/td-quote.bin").read_bytes()
    tpm = SoftwareTpm(nv_index_max=4096)
    tpm.create_persistent_ak(VTPM_AK_HANDLE)
    tpm.nv_define(VTPM_HCL_REPORT_NV_INDEX, len(hcl))
    tpm.nv_write(VTPM_HCL_REPORT_NV_INDEX, hcl)
    seen: list[bytes] = []

    class Quoter:
        def td_quote(self, td_report: bytes) -> bytes:
            seen.append(td_report)
            return td_quote

    attester = AzTdxVtpmAttester(tpm, Quoter(), AzVtpmSettings(report_refresh_delay_s=0))
    ev = attester.get_evidence(REPORT_DATA)
    assert list(ev) == ["version", "tpm_quote", "hcl_report", "td_quote"]
    parsed = AzEvidence.from_json(ev, tee="az-tdx-vtpm")
    assert parsed.hcl_report == hcl and parsed.td_quote == td_quote
    assert seen == [hcl[32 : 32 + 1024]]  # the TD report inside the HCL report
    assert tpm.nv_read(VTPM_USER_DATA_NV_INDEX) == REPORT_DATA.ljust(64, b"\0")
    tpm.nv_write(VTPM_USER_DATA_NV_INDEX, b"short")  # size mismatch: redefined, as Azure tooling
    assert tpm.nv_read(VTPM_USER_DATA_NV_INDEX) == b"short"


def test_snp_attester_evidence_verifies_with_snp_verifier(tmp_path: Path) -> None:
    """An emulated-vendor SNP report served by configfs-tsm, with the VCEK in the auxblob
    certificate table, goes through ``snp`` verifier (emulated roots only)."""
    import datetime as dt

    from trustpod.guest.emulator.hcl import build_snp_report
    from trustpod.guest.emulator.vendor import EmulatedVendor

    snp_verifier = pytest.importorskip("trustpod.verifiers.snp")
    from trustpod.verifiers.base import VerifierSettings, VerifyInput

    vendor = EmulatedVendor.generate()
    initdata = hashlib.sha256(b"initdata").digest()
    report = build_snp_report(
        vendor,
        report_data=REPORT_DATA.ljust(64, b"\0"),
        measurement=hashlib.sha384(b"fw").digest(),
        policy=0x30000,
        host_data=initdata,
    )
    vcek_guid = next(g for g, n in SNP_CERT_GUIDS.items() if n == "VCEK")
    attester = _snp(tmp_path, report, cert_table([(vcek_guid, vendor.vcek_der)]))
    attester.bind_init_data(initdata)
    ev = attester.get_evidence(REPORT_DATA)
    expected = VerifyInput(REPORT_DATA, initdata, dt.datetime.now(dt.UTC))
    settings = VerifierSettings(insecure_emulated_roots=vendor.emulated_roots)
    claims = snp_verifier.create(settings).verify(ev, expected)[0].claims
    assert claims["init_data"] == initdata.hex() and claims["chip_id"] == vendor.chip_id.hex()
    with pytest.raises(TrustpodError):
        snp_verifier.create(VerifierSettings()).verify(ev, expected)


def test_tpm_attester_evidence_verifies_with_tpm_verifier() -> None:
    import datetime as dt

    tpm_verifier = pytest.importorskip("trustpod.verifiers.tpm")
    from trustpod.verifiers.base import VerifierSettings, VerifyInput

    attester = TpmAttester(SoftwareTpm())
    digest = hashlib.sha256(b"initdata").digest()
    attester.bind_init_data(digest)
    ev = attester.get_evidence(REPORT_DATA)
    expected = VerifyInput(REPORT_DATA, digest, dt.datetime.now(dt.UTC))
    claims = tpm_verifier.create(VerifierSettings()).verify(ev, expected)[0].claims
    assert claims["init_data"] == pcr8_after_extend(digest).hex()
    assert claims["ak_public"] == ev["ak_public"]


def test_sev_guest_ext_report_retries_with_kernel_length(
    tmp_path: Path, verifier_data: Path
) -> None:
    from trustpod.guest.attesters.snp import SNP_GET_EXT_REPORT

    report = (verifier_data / "snp/test-report.bin").read_bytes()
    vcek = (verifier_data / "snp/test-vcek.der").read_bytes()
    vcek_guid = next(g for g, n in SNP_CERT_GUIDS.items() if n == "VCEK")
    table = cert_table([(vcek_guid, vcek)]).ljust(20000, b"\0")
    calls: list[int] = []

    def fake_ioctl(fd: int, request: int, arg: bytearray) -> None:
        assert request == SNP_GET_EXT_REPORT == 0xC0205302
        _, req, resp, _ = struct.unpack("<B7xQQQ", bytes(arg))
        certs_addr, certs_len = struct.unpack_from("<QI", ctypes.string_at(req, 112), 96)
        calls.append(certs_len)
        if certs_len < len(table):  # kernel: buffer too small, here is the length we need
            ctypes.memmove(req + 104, struct.pack("<I", len(table)), 4)
            arg[24:32] = struct.pack("<Q", 1 << 32)
            raise OSError(5, "EIO")
        ctypes.memmove(certs_addr, table, len(table))
        ctypes.memmove(resp, struct.pack("<II24x", 0, len(report)) + report, 32 + len(report))

    dev_path = tmp_path / "sev-guest"
    dev_path.write_bytes(b"")
    raw, aux = SevGuestDevice(dev_path, ioctl=fake_ioctl).get_ext_report(bytes(64), 0)
    assert raw == report and calls == [16384, len(table)]
    assert aux is not None and parse_cert_table(aux)[0]["cert_type"] == "VCEK"


def test_imds_sources_over_a_real_local_http_server(verifier_data: Path) -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from trustpod.guest.attesters.az_vtpm import ImdsTdQuoteSource, ImdsVcekSource

    vcek_pem = (verifier_data / "az-snp-vtpm/vcek.pem").read_text()
    td_quote = (verifier_data / "az-tdx-vtpm/td-quote.bin").read_bytes()
    seen: dict[str, object] = {}

    class Imds(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, body: dict[str, str]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            seen["metadata"] = self.headers.get("Metadata")
            self._send({"vcekCert": vcek_pem, "certificateChain": ""})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen["report"] = base64.urlsafe_b64decode(body["report"] + "==")
            self._send({"quote": base64.urlsafe_b64encode(td_quote).decode().rstrip("=")})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Imds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        der = ImdsVcekSource(f"{base}/metadata/THIM/amd/certification").vcek_der()
        assert der[:2] == b"\x30\x82" and seen["metadata"] == "true"
        quote = ImdsTdQuoteSource(f"{base}/acc/tdquote").td_quote(b"\x07" * 1024)
        assert quote == td_quote and seen["report"] == b"\x07" * 1024
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(DependencyError):
        ImdsVcekSource(f"{base}/gone", timeout_s=0.5).vcek_der()


def test_file_vcek_source_pem_and_der(tmp_path: Path, verifier_data: Path) -> None:
    from trustpod.guest.attesters.az_vtpm import FileVcekSource, pem_certificate_to_der

    pem_path = verifier_data / "az-snp-vtpm/vcek.pem"
    der = FileVcekSource(pem_path).vcek_der()
    assert der == pem_certificate_to_der(pem_path.read_text())  # first block: the VCEK
    (tmp_path / "vcek.der").write_bytes(der)
    assert FileVcekSource(tmp_path / "vcek.der").vcek_der() == der
    (tmp_path / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\n!!!\n")
    with pytest.raises(ConfigError):
        FileVcekSource(tmp_path / "bad.pem").vcek_der()
    with pytest.raises(ConfigError):
        FileVcekSource(tmp_path / "absent.pem").vcek_der()


def test_tdx_rtmr_extend_through_sysfs(tmp_path: Path, verifier_data: Path) -> None:
    attester = _tdx(tmp_path, (verifier_data / "tdx_quote_4.dat").read_bytes())
    measurements = tmp_path / "m"
    measurements.mkdir()
    (measurements / "rtmr3:sha384").write_bytes(b"")
    (measurements / "rtmr2:sha384").write_bytes(b"")
    attester.extend_runtime_measurement(b"\x01" * 32, 17)  # PCR 17 -> RTMR3 (upstream map)
    assert (measurements / "rtmr3:sha384").read_bytes() == b"\x01" * 32 + bytes(16)
    attester.extend_runtime_measurement(b"\x02" * 48, 9)  # PCR 8..15 -> RTMR2
    assert (measurements / "rtmr2:sha384").read_bytes() == b"\x02" * 48


@settings(max_examples=60, deadline=None)
@given(
    nonce=st.binary(max_size=64),
    pcrs=st.lists(st.integers(0, 23), min_size=1, max_size=24, unique=True).map(sorted),
)
def test_software_quote_roundtrips_through_the_tpm_format(nonce: bytes, pcrs: list[int]) -> None:
    from trustpod.evidence.tpm import TpmsAttest, TpmtSignature, pcr_digest

    tpm = _SOFT_TPM
    quote = tpm.quote(0x81000003, pcrs, nonce)
    attest = TpmsAttest.from_bytes(quote.message)
    assert attest.to_bytes() == quote.message
    assert attest.extra_data == nonce and attest.pcr_select[0].pcrs == tuple(pcrs)
    assert attest.pcr_digest == pcr_digest(quote.pcrs)
    assert TpmtSignature.from_bytes(quote.signature).signature == quote.raw_signature


_SOFT_TPM = SoftwareTpm()
_SOFT_TPM.create_persistent_ak(0x81000003)
