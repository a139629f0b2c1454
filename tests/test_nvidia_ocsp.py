"""OCSP for the GPU device chain against a loopback OCSP responder (real HTTP on 127.0.0.1):
good -> NRAS chain claims (upstream's default GPU policy then scores hardware 2); revoked,
stale, wrongly signed and nonce-mismatched responses refused; results cached."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from trustpod.collateral.nvidia import HttpxPost, ocsp_checker
from trustpod.collateral.wiring import create_nvidia
from trustpod.errors import VerificationError
from trustpod.guest.emulator.gpu import EmulatedGpu
from trustpod.verifiers.base import VerifierSettings, VerifyInput


def _now() -> dt.datetime:
    """The wall clock at use (the fake responder answers for the present)."""
    return dt.datetime.now(dt.UTC)


def _self_signed(name: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
        .sign(key, hashes.SHA384())
    )


class Responder(BaseHTTPRequestHandler):
    """Answers for the emulated GPU's leaf; ``mode`` picks the answer."""

    gpu: EmulatedGpu
    mode = "good"
    requests = 0

    def do_POST(self) -> None:
        type(self).requests += 1
        body = self.rfile.read(int(self.headers["Content-Length"]))
        req = ocsp.load_der_ocsp_request(body)
        certs = x509.load_pem_x509_certificates(self.gpu.chain_pem)
        leaf, root = certs[0], certs[-1]
        key, signer = self.gpu.root_key, root
        if self.mode == "wrong_key":  # same issuer name, another key: signature must fail
            key = ec.generate_private_key(ec.SECP384R1())
            signer = _self_signed(root.subject, key)
        assert req.serial_number == leaf.serial_number
        status = ocsp.OCSPCertStatus.REVOKED if self.mode == "revoked" else ocsp.OCSPCertStatus.GOOD
        this = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        nxt = this + dt.timedelta(hours=2)
        if self.mode == "stale":
            this, nxt = this - dt.timedelta(days=2), this - dt.timedelta(days=1)
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response(
                cert=leaf,
                issuer=root,
                algorithm=hashes.SHA384(),
                cert_status=status,
                this_update=this,
                next_update=nxt,
                revocation_time=this if status == ocsp.OCSPCertStatus.REVOKED else None,
                revocation_reason=None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.NAME, signer)
        )
        nonce = req.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        if self.mode == "bad_nonce":
            nonce = b"x" * 16
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        assert key is not None
        data = builder.sign(key, hashes.SHA384()).public_bytes(Encoding.DER)
        self.send_response(200)
        self.send_header("Content-Type", "application/ocsp-response")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def gpu() -> EmulatedGpu:
    return EmulatedGpu.create()


@pytest.fixture
def responder(gpu: EmulatedGpu) -> Iterator[str]:
    Responder.gpu, Responder.mode, Responder.requests = gpu, "good", 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Responder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _settings(gpu: EmulatedGpu, url: str) -> VerifierSettings:
    return VerifierSettings(
        insecure_emulated_roots=(gpu.root_der,), extra={"nvidia": {"ocsp_url": url}}
    )


def test_good_adds_nras_chain_claims_and_default_policy_scores_them(
    gpu: EmulatedGpu, responder: str
) -> None:
    verifier = create_nvidia(_settings(gpu, responder))
    rd = bytes(48)
    claims = verifier.verify(gpu.evidence(rd), VerifyInput(rd, None, _now()))[0].claims
    chain = claims["x-nvidia-gpu-attestation-report-cert-chain"]
    assert chain == {"x-nvidia-cert-status": "valid", "x-nvidia-cert-ocsp-status": "good"}
    assert claims["x-nvidia-gpu-attestation-report-signature-verified"] is True
    verifier.verify(gpu.evidence(rd), VerifyInput(rd, None, _now()))
    assert Responder.requests == 1  # cached until next_update
    from trustpod.attestation.defaults import default_policy
    from trustpod.rego import PolicyEngine

    compiled = PolicyEngine().compile(
        default_policy("default_gpu"), ("trust_claims",), {"reference": {}}
    )
    results = compiled.evaluate_all({"nvidia": claims})
    assert results["trust_claims"]["hardware"] == 2


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("revoked", "nvidia.ocsp_revoked"),
        ("stale", "nvidia.ocsp_stale"),
        ("wrong_key", "nvidia.ocsp"),
        ("bad_nonce", "nvidia.ocsp"),
    ],
)
def test_bad_responses_refused(gpu: EmulatedGpu, responder: str, mode: str, reason: str) -> None:
    Responder.mode = mode
    rd = bytes(48)
    with pytest.raises(VerificationError) as exc:
        create_nvidia(_settings(gpu, responder)).verify(
            gpu.evidence(rd), VerifyInput(rd, None, _now())
        )
    assert exc.value.reason == reason


def test_ocsp_off_by_default_and_unreachable_responder(gpu: EmulatedGpu) -> None:
    assert ocsp_checker(VerifierSettings()) is None
    from trustpod.errors import DependencyError

    with pytest.raises(DependencyError):
        HttpxPost(timeout_s=1).post("http://127.0.0.1:9/", b"x")
