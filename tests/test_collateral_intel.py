"""Intel collateral: a fake PCS on 127.0.0.1 (real sockets), retry/backoff, limits, store, cache.

The fake PCS serves the vectors' tcbInfo.json / enclaveIdentity.json re-signed by an emulated TCB
signer (with the issuer-chain headers a real PCS sends) and emulated CRLs. Never the internet.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from test_tdx_verifier import IN_WINDOW, evidence, expected_for, resign
from test_tdx_verifier import emulated_tcb_chain as _chain
from trustpod._internal.clock import FixedClock
from trustpod.collateral.intel import (
    CachingIntelSource,
    DirectoryIntelStore,
    HttpxGet,
    PcsClient,
    import_files,
    normalize_pcs_url,
    source_from_settings,
)
from trustpod.errors import DependencyError, EvidenceError, NotFoundError, VerificationError
from trustpod.verifiers.base import VerifierSettings
from trustpod.verifiers.intel_dcap import DcapOptions
from trustpod.verifiers.tdx import TdxVerifier

FMSPC = "00A06D080000"


def _crl(key: ec.EllipticCurvePrivateKey) -> bytes:
    now = dt.datetime(2025, 10, 1, tzinfo=dt.UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Test CA")])
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name)
        .last_update(now)
        .next_update(now + dt.timedelta(days=60))
        .add_extension(x509.CRLNumber(7), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(Encoding.DER)
    )


@dataclass
class FakePcs:
    routes: dict[str, tuple[int, dict[str, str], bytes]]
    hits: list[str] = field(default_factory=list)
    throttle: int = 0  # answer 429 this many times first
    delay_s: float = 0.0

    def handler(self) -> type[BaseHTTPRequestHandler]:
        pcs = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                pcs.hits.append(self.path)
                if pcs.delay_s:
                    time.sleep(pcs.delay_s)
                if pcs.throttle > 0:
                    pcs.throttle -= 1
                    self.send_response(429)
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                status, headers, body = pcs.routes.get(self.path, (404, {}, b"not found"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # client gave up (limits test)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture(scope="module")
def material(verifier_data: Path) -> dict[str, bytes]:
    key, chain, root = _chain()
    crl_key = ec.generate_private_key(ec.SECP256R1())
    return {
        "tcb": resign((verifier_data / "tcbInfo.json").read_bytes(), "tcbInfo", key),
        "qe": resign((verifier_data / "enclaveIdentity.json").read_bytes(), "enclaveIdentity", key),
        "chain": chain,
        "root": root,
        "crl": _crl(crl_key),
        "q6": (verifier_data / "tdx_quote_6.dat").read_bytes(),
    }


@pytest.fixture
def pcs(material: dict[str, bytes]) -> Iterator[tuple[FakePcs, str]]:
    enc = urllib.parse.quote(material["chain"].decode())
    fake = FakePcs(
        {
            f"/tdx/certification/v4/tcb?fmspc={FMSPC}": (
                200, {"TCB-Info-Issuer-Chain": enc}, material["tcb"]
            ),
            "/tdx/certification/v4/qe/identity": (
                200, {"SGX-Enclave-Identity-Issuer-Chain": enc}, material["qe"]
            ),
            "/sgx/certification/v4/pckcrl?ca=platform&encoding=der": (200, {}, material["crl"]),
            "/sgx/certification/v4/rootcacrl": (200, {}, material["crl"].hex().encode()),
        }
    )  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}/sgx/certification/v4/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def client(url: str, sleeps: list[float] | None = None, **kw: float) -> PcsClient:
    record = sleeps if sleeps is not None else []
    return PcsClient(url, HttpxGet(**kw), sleep=record.append)  # type: ignore[arg-type]


def test_fetch_and_verify_end_to_end(
    pcs: tuple[FakePcs, str], material: dict[str, bytes], tmp_path: Path
) -> None:
    _fake, url = pcs
    items = client(url).fetch(FMSPC.lower(), "platform")
    assert items.tcb_info_issuer_chain == material["chain"]
    col = items.parse()
    assert col.pck_crl is not None and col.root_ca_crl is not None  # DER and PCCS hex
    source = CachingIntelSource(client(url), DirectoryIntelStore(tmp_path), FixedClock(IN_WINDOW))
    opts = DcapOptions(extra_roots_der=(material["root"],), insecure_skip_crl=True)
    [out] = TdxVerifier(source, opts).verify(evidence(material["q6"]), expected_for(material["q6"]))
    assert out.claims["tcb_status"] == "OutOfDate"
    # emulated CRLs are not signed by Intel's Platform CA: refused when CRLs are checked
    strict = DcapOptions(extra_roots_der=(material["root"],))
    with pytest.raises(VerificationError) as exc:
        TdxVerifier(source, strict).verify(evidence(material["q6"]), expected_for(material["q6"]))
    assert exc.value.reason == "tdx.crl_signature"


def test_cache_memory_disk_and_refresh(pcs: tuple[FakePcs, str], tmp_path: Path) -> None:
    fake, url = pcs
    clock = FixedClock(IN_WINDOW)
    source = CachingIntelSource(client(url), DirectoryIntelStore(tmp_path), clock)
    source.get_tdx(FMSPC, "platform")
    source.get_tdx(FMSPC, "platform")
    assert len(fake.hits) == 4  # one fetch of 4 items, then memory
    assert (tmp_path / "intel" / "tdx" / f"tcbinfo-{FMSPC}.json").is_file()
    assert (tmp_path / "intel" / "tdx" / f"tcbinfo-{FMSPC}.issuer-chain.pem").is_file()
    offline = CachingIntelSource(None, DirectoryIntelStore(tmp_path), clock)
    assert offline.get_tdx(FMSPC, "platform").tcb_info.body["fmspc"] == FMSPC
    # a fresh process with a clock past nextUpdate refetches
    clock.set(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    CachingIntelSource(client(url), DirectoryIntelStore(tmp_path), clock).get_tdx(FMSPC, "platform")
    assert len(fake.hits) == 8


def test_retry_with_backoff_on_429(pcs: tuple[FakePcs, str]) -> None:
    fake, url = pcs
    fake.throttle = 2
    sleeps: list[float] = []
    client(url, sleeps).fetch(FMSPC, "platform")
    assert sleeps == [0.0, 0.0]
    fake.throttle = 100
    with pytest.raises(DependencyError) as exc:
        client(url, sleeps).fetch(FMSPC, "platform")
    assert exc.value.reason == "collateral.fetch_failed"


def test_limits_timeouts_and_not_found(pcs: tuple[FakePcs, str]) -> None:
    fake, url = pcs
    with pytest.raises(NotFoundError):
        client(url).fetch("00906ED50000", "platform")
    with pytest.raises(DependencyError) as exc:
        client(url, max_bytes=100).fetch(FMSPC, "platform")
    assert exc.value.reason == "collateral.too_large"
    fake.delay_s = 1.0
    with pytest.raises(DependencyError) as exc:
        client(url, timeout_s=0.2).fetch(FMSPC, "platform")
    assert exc.value.reason == "collateral.fetch_failed"
    fake.delay_s = 0.0
    with pytest.raises(EvidenceError):
        client(url).fetch("nothex", "platform")
    with pytest.raises(EvidenceError):
        client(url).fetch(FMSPC, "other")


def test_offline_store_and_import(verifier_data: Path, tmp_path: Path) -> None:
    store = DirectoryIntelStore(tmp_path)
    with pytest.raises(NotFoundError):
        store.get_tdx(FMSPC, "platform")
    written = import_files(
        tmp_path,
        tcb_info=verifier_data / "tcbInfo.json",
        qe_identity=verifier_data / "enclaveIdentity.json",
    )
    assert {p.name for p in written} == {f"tcbinfo-{FMSPC}.json", "qe-identity.json"}
    col = store.get_tdx(FMSPC.lower(), "platform")
    assert col.tcb_info.issuer_chain == () and col.pck_crl is None
    settings = VerifierSettings(collateral_dir=tmp_path)
    assert (
        source_from_settings(settings).get_tdx(FMSPC, "platform").qe_identity.body["id"] == "TD_QE"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.trustedservices.intel.com/sgx/certification/v4/", "https://api.trustedservices.intel.com"),
        ("https://pccs.local:8081", "https://pccs.local:8081"),
        ("https://pccs.local/tdx/certification/v4", "https://pccs.local"),
    ],
)  # fmt: skip
def test_normalize_pcs_url(url: str, expected: str) -> None:
    assert normalize_pcs_url(url) == expected


def test_bad_pcs_url() -> None:
    with pytest.raises(EvidenceError):
        normalize_pcs_url("file:///etc/passwd")


def test_tcb_update_type(pcs: tuple[FakePcs, str], material: dict[str, bytes]) -> None:
    fake, url = pcs
    enc = urllib.parse.quote(material["chain"].decode())
    fake.routes[f"/tdx/certification/v4/tcb?fmspc={FMSPC}&update=early"] = (
        200, {"TCB-Info-Issuer-Chain": enc}, material["tcb"]
    )  # fmt: skip
    fake.routes["/tdx/certification/v4/qe/identity?update=early"] = (
        200, {"SGX-Enclave-Identity-Issuer-Chain": enc}, material["qe"]
    )  # fmt: skip
    settings = VerifierSettings(intel_pcs_url=url, extra={"tdx": {"tcb_update_type": "early"}})
    source_from_settings(settings).get_tdx(FMSPC, "platform")
    assert f"/tdx/certification/v4/tcb?fmspc={FMSPC}&update=early" in fake.hits
    with pytest.raises(EvidenceError):
        PcsClient(url, HttpxGet(), tcb_update_type="late")
