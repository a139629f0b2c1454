"""Helpers for the KBS tests: a real uvicorn server in a thread, and small fakes of the attestation
service / RVPS (used until and alongside the real built-in service)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import rfc8785
import uvicorn
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from trustpod.errors import EvidenceError, VerificationError


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class FakeAttestation:
    """Sample-TEE-only AS: exact report_data check, ES256 EAR-shaped token with header jwk."""

    def __init__(self, status: str = "affirming", clock: Any = None) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        nums = self.key.public_key().public_numbers()
        self.jwk = {
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "x": b64url(nums.x.to_bytes(32, "big")),
            "y": b64url(nums.y.to_bytes(32, "big")),
        }
        self.status = status
        self.clock = clock
        self.policies: dict[str, str] = {}

    def _now(self) -> int:
        return int(self.clock.time() if self.clock is not None else time.time())

    def evaluate(
        self,
        tee: str,
        primary_evidence: Any,
        runtime_data: dict[str, Any],
        init_data_toml: str | None,
        hash_algorithm: str = "sha384",
        policy_id: str = "default",
    ) -> str:
        expected = hashlib.new(hash_algorithm, rfc8785.dumps(runtime_data)).digest()
        got = base64.b64decode(primary_evidence.get("report_data", ""))
        if tee != "sample" or got != expected:
            raise VerificationError("sample report_data mismatch", reason="sample.report_data")
        return self.issue(runtime_data)

    def issue(self, runtime_data: dict[str, Any], exp_in: int = 300) -> str:
        now = self._now()
        claims = {
            "eat_profile": "tag:github.com,2024:confidential-containers/Trustee",
            "iat": now,
            "ear.verifier-id": {"developer": "test", "build": "fake"},
            "submods": {
                "cpu0": {
                    "ear.status": self.status,
                    "ear.appraisal-policy-id": "default",
                    "ear.veraison.annotated-evidence": {
                        "sample": {"svn": "1"},
                        "runtime_data_claims": runtime_data,
                    },
                }
            },
            "exp": now + exp_in,
            "iss": "CoCo-Attestation-Service",
        }
        header = {"typ": "JWT", "alg": "ES256", "jwk": self.jwk}
        signing_input = (
            f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        )
        r, s = decode_dss_signature(
            self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def set_policy(self, policy_id: str, policy: str) -> None:
        self.policies[policy_id] = policy


class FakeRvps:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def register(self, message: Any) -> None:
        try:
            payload = json.loads(base64.b64decode(message["payload"]))
            self.values.update(payload)
        except (KeyError, TypeError, ValueError) as exc:
            raise EvidenceError("bad RVPS message", reason="rvps.message") from exc

    def query(self, name: str) -> Any:
        return self.values.get(name)


@contextlib.contextmanager
def serve(app: Any, *, cert: Any = None) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1:<ephemeral> in a thread; yields the base URL.

    ``cert``: a ``trustme`` leaf (``LeafCert``) for HTTPS, or None for HTTP.
    """
    kwargs: dict[str, Any] = {}
    tmp: list[Any] = []
    if cert is not None:
        key_ctx = cert.private_key_pem.tempfile()
        chain_ctx = cert.cert_chain_pems[0].tempfile()
        tmp = [key_ctx, chain_ctx]
        kwargs = {"ssl_keyfile": key_ctx.__enter__(), "ssl_certfile": chain_ctx.__enter__()}
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", access_log=False, **kwargs
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    scheme = "https" if cert is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        for ctx in tmp:
            ctx.__exit__(None, None, None)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run_fake_kbs_process(config_path: str, signer_pem: str, port_file: str) -> None:
    """Entry point of a separate KBS process (fake AS signing with ``signer_pem``)."""
    from cryptography.hazmat.primitives import serialization

    from trustpod.kbs.config import load_config
    from trustpod.kbs.wiring import build_app

    config = load_config(config_path)
    fake = FakeAttestation()
    key = serialization.load_pem_private_key(Path(signer_pem).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    fake.key = key
    nums = key.public_key().public_numbers()
    fake.jwk.update(x=b64url(nums.x.to_bytes(32, "big")), y=b64url(nums.y.to_bytes(32, "big")))
    app = build_app(config, attestation=fake, rvps=FakeRvps(), own_jwks=[fake.jwk])
    with serve(app) as url:
        Path(port_file).write_text(url)
        while True:
            time.sleep(1)


if __name__ == "__main__":
    import sys

    run_fake_kbs_process(*sys.argv[1:4])
