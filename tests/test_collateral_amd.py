"""AMD collateral: offline store layout, pinned roots, a fake KDS on 127.0.0.1 (429 then 200,
cache hit afterwards), size limit, and the SNP verifier fed from the store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from test_snp_support import load_amd_ca
from trustpod.collateral.amd import AmdKdsFetcher, CachingAmdSource, KdsSettings
from trustpod.collateral.cache import FileCache
from trustpod.collateral.ports import AmdTcb, MemoryAmdCollateral
from trustpod.collateral.wiring import create_snp as create
from trustpod.errors import DependencyError, EvidenceError, NotFoundError, VerificationError
from trustpod.evidence.snp import SnpReport
from trustpod.verifiers.base import VerifierSettings, VerifyInput
from trustpod.verifiers.snp_chain import load_cert

MILAN_TCB = AmdTcb(bootloader=3, tee=0, snp=8, microcode=115)


class FakeKds:
    """A tiny KDS: answers 429 (Retry-After: 0) to the first VCEK request, then 200."""

    def __init__(self, vcek: bytes, chain_pem: bytes, vlek_pem: bytes) -> None:
        self.vcek, self.chain_pem, self.vlek_pem = vcek, chain_pem, vlek_pem
        self.requests: list[str] = []
        self.throttle = 1
        kds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                kds.requests.append(self.path)
                if self.path.startswith("/vcek/v1/Milan/cert_chain"):
                    return self._send(200, kds.chain_pem)
                if self.path.startswith("/vlek/v1/Milan/cert_chain"):
                    return self._send(200, kds.vlek_pem)
                if self.path.startswith("/vcek/v1/Milan/"):
                    if kds.throttle > 0:
                        kds.throttle -= 1
                        return self._send(429, b"slow down", {"Retry-After": "0"})
                    return self._send(200, kds.vcek)
                if self.path.startswith("/big"):
                    return self._send(200, b"x" * 200_000)
                return self._send(404, b"")

            def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def kds(trustee_vectors: Path, verifier_data: Path) -> Iterator[FakeKds]:
    ca = load_amd_ca(trustee_vectors).get_ca_certs("Milan")
    assert ca.ark and ca.ask and ca.asvk

    def pem(*ders: bytes) -> bytes:
        return b"".join(x509.load_der_x509_certificate(d).public_bytes(Encoding.PEM) for d in ders)

    server = FakeKds(
        (verifier_data / "snp/test-vcek.der").read_bytes(),
        pem(ca.ask, ca.ark),
        pem(ca.asvk, ca.ark),
    )
    yield server
    server.stop()


def _report(verifier_data: Path) -> SnpReport:
    return SnpReport.from_bytes((verifier_data / "snp/test-report.bin").read_bytes())


def test_kds_429_then_200_then_cache_hit(kds: FakeKds, tmp_path: Path, verifier_data: Path) -> None:
    sleeps: list[float] = []
    fetcher = AmdKdsFetcher(KdsSettings(base_url=kds.url, timeout_s=5), sleep=sleeps.append)
    source = CachingAmdSource(FileCache(tmp_path), fetcher)
    hwid = _report(verifier_data).chip_id.hex()
    der = source.get_vcek("Milan", hwid, MILAN_TCB)
    assert der == kds.vcek and sleeps == [0.5]  # Retry-After: 0, floored by the backoff
    vcek_requests = [p for p in kds.requests if p.startswith(f"/vcek/v1/Milan/{hwid}")]
    assert len(vcek_requests) == 2
    assert vcek_requests[0].endswith("?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115")
    stored = tmp_path / "vcek" / hwid / "bl03_tee00_snp08_ucode115_vcek.der"
    assert stored.read_bytes() == der
    ca = source.get_ca_certs("Milan")
    assert ca.ark and ca.ask and ca.asvk and (tmp_path / "amd/Milan/ark.der").exists()
    # a new process (fresh source, same directory) is served from disk: no request
    before = len(kds.requests)
    again = CachingAmdSource(FileCache(tmp_path), fetcher)
    assert again.get_vcek("Milan", hwid, MILAN_TCB) == der
    assert again.get_ca_certs("Milan").ask == ca.ask
    assert len(kds.requests) == before
    fetcher.close()


def test_verifier_from_settings_uses_kds_then_offline(
    kds: FakeKds, tmp_path: Path, verifier_data: Path
) -> None:
    report = _report(verifier_data)
    raw = report.to_bytes()
    kds.throttle = 0
    online = create(VerifierSettings(collateral_dir=tmp_path, amd_kds_url=kds.url))
    expected = VerifyInput(report.report_data, None, __import__("test_snp_support").NOW)
    assert online.verify(raw, expected)[0].claims["chip_id"] == report.chip_id.hex()
    kds.stop()
    offline = create(VerifierSettings(collateral_dir=tmp_path))
    assert offline.verify(raw, expected)[0].claims["reported_tcb_snp"] == 8


def test_kds_errors(kds: FakeKds) -> None:
    fetcher = AmdKdsFetcher(
        KdsSettings(base_url=kds.url, max_response_bytes=1000, max_attempts=2), sleep=lambda s: None
    )
    with pytest.raises(NotFoundError):
        fetcher.get_vcek("Genoa", "00" * 64, MILAN_TCB)
    with pytest.raises(DependencyError) as err:
        fetcher._get("/big")
    assert err.value.reason == "collateral.kds_size"
    dead = AmdKdsFetcher(
        KdsSettings(base_url="http://127.0.0.1:9", timeout_s=0.5, max_attempts=2),
        sleep=lambda s: None,
    )
    with pytest.raises(DependencyError) as err:
        dead.get_vcek("Milan", "00" * 64, MILAN_TCB)
    assert err.value.reason == "collateral.kds_unavailable"


def test_mock_transport_persistent_429_gives_up() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(429, headers={"Retry-After": "100"})

    sleeps: list[float] = []
    fetcher = AmdKdsFetcher(
        KdsSettings(max_attempts=3, max_retry_after_s=2.0),
        transport=httpx.MockTransport(handler),
        sleep=sleeps.append,
    )
    with pytest.raises(DependencyError):
        fetcher.get_vcek("Turin", "00" * 8, AmdTcb(1, 2, 3, 4, fmc=5))
    assert sleeps == [2.0, 2.0] and len(calls) == 3
    assert "fmcSPL=05&blSPL=01" in calls[0]


def test_store_refuses_unpinned_and_unsigned(tmp_path: Path, trustee_vectors: Path) -> None:
    from test_snp_support import EmulatedAmd

    store = FileCache(tmp_path)
    amd = EmulatedAmd.create()
    with pytest.raises(VerificationError) as err:
        store.put_ca("Milan", "ark", amd.der("ark"))
    assert err.value.reason == "collateral.root_not_pinned"
    with pytest.raises(NotFoundError):
        store.put_ca("Milan", "ask", amd.der("ask"))
    real = load_amd_ca(trustee_vectors).get_ca_certs("Milan")
    assert real.ark and real.ask
    store.put_ca("Milan", "ark", real.ark)
    with pytest.raises(VerificationError) as err:
        store.put_ca("Milan", "ask", amd.der("ask"))
    assert err.value.reason == "collateral.ca_signature"
    store.put_ca("Milan", "ask", real.ask)
    # a tampered store fails closed
    (tmp_path / "amd/Milan/ark.der").write_bytes(amd.der("ark"))
    with pytest.raises(VerificationError):
        store.get_ca_certs("Milan")
    with pytest.raises(EvidenceError):
        store.vcek_path("../../etc", MILAN_TCB)


def test_import_cert_places_files(
    tmp_path: Path, trustee_vectors: Path, verifier_data: Path
) -> None:
    store = FileCache(tmp_path)
    real = load_amd_ca(trustee_vectors).get_ca_certs("Milan")
    for der in (real.ark, real.ask, real.asvk, (verifier_data / "snp/test-vcek.der").read_bytes()):
        assert der is not None
        cert = load_cert(der, "test")
        store.import_cert(cert, der)
    hwid = _report(verifier_data).chip_id.hex()
    assert (tmp_path / "vcek" / hwid / "bl03_tee00_snp08_ucode115_vcek.der").exists()
    assert {p.name for p in (tmp_path / "amd/Milan").iterdir()} == {
        "ark.der",
        "ask.der",
        "asvk.der",
    }
    assert isinstance(MemoryAmdCollateral().get_ca_certs("Milan").ark, type(None))
