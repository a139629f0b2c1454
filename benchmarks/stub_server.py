"""KBS with a STUB attestation service (benchmark only): measures the KBS layer (sessions,
token verification, resource policy, JWE, HTTP) without evidence verification or attestation
policy cost. The stub checks the sample report_data exactly and signs an EAR-shaped ES256 token
with the configured signer key, like the built-in service does. Never used outside benchmarks."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from trustpod.attestation.result import AttestationResult
from trustpod.errors import VerificationError


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class StubAttestation:
    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self.key = key
        nums = key.public_key().public_numbers()
        self.jwk = {
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "x": _b64url(nums.x.to_bytes(32, "big")),
            "y": _b64url(nums.y.to_bytes(32, "big")),
        }
        self._header = _b64url(json.dumps({"typ": "JWT", "alg": "ES256", "jwk": self.jwk}).encode())

    def appraise(
        self,
        tee: str,
        primary_evidence: Any,
        runtime_data: dict[str, Any],
        init_data_toml: str | None,
        *,
        hash_algorithm: str = "sha384",
        policy_id: str = "default",
    ) -> AttestationResult:
        expected = hashlib.new(hash_algorithm, rfc8785.dumps(runtime_data)).digest()
        if base64.b64decode(primary_evidence.get("report_data", "")) != expected:
            raise VerificationError("report_data mismatch", reason="sample.report_data")
        now = int(time.time())
        claims = {
            "eat_profile": "tag:github.com,2024:confidential-containers/Trustee",
            "iat": now,
            "submods": {
                "cpu0": {
                    "ear.status": "affirming",
                    "ear.veraison.annotated-evidence": {"runtime_data_claims": runtime_data},
                }
            },
            "exp": now + 300,
            "iss": "stub",
        }
        signing_input = f"{self._header}.{_b64url(json.dumps(claims).encode())}"
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        token = f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
        return AttestationResult(token=token, claims=claims)

    def set_policy(self, policy_id: str, policy: str) -> None:
        return None


class StubRvps:
    def register(self, message: Any) -> None:
        return None

    def query(self, name: str) -> Any:
        return None


def app_factory() -> Any:
    from trustpod.kbs.config import load_config
    from trustpod.kbs.wiring import build_app

    cfg = load_config(os.environ["TRUSTPOD_KBS_CONFIG"])
    key_path = cfg.attestation_service.attestation_token_broker.signer_key_path
    assert key_path is not None, "the stub signs with [attestation_token_broker] signer key"
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return build_app(cfg, attestation=StubAttestation(key), rvps=StubRvps())


def main() -> None:
    import sys

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from trustpod.kbs.config import load_config
    from trustpod.kbs.serve import bind_sockets

    config_path, workers = sys.argv[1], int(sys.argv[2])
    os.environ["TRUSTPOD_KBS_CONFIG"] = config_path
    cfg = load_config(config_path)
    sockets = bind_sockets(cfg.http_server.sockets)
    config = uvicorn.Config(
        "benchmarks.stub_server:app_factory",
        factory=True,
        workers=workers,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    if workers == 1:
        uvicorn.Server(config).run(sockets=sockets)
    else:
        Multiprocess(config, sockets=sockets).run()


if __name__ == "__main__":
    main()
