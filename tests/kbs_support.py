"""Helpers for the KBS tests: a real uvicorn server in a thread, the KBS over the built-in
attestation service and RVPS, and an external token issuer (tokens the KBS did not sign)."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from trustpod.kbs.app import create_app
from trustpod.kbs.core import KbsCore
from trustpod.kbs.wiring import build_core


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sample_reference_values(core: KbsCore) -> None:
    """Register the values the default attestation policy checks for the sample TEE (as an
    operator would through ``POST /kbs/v0/reference-value``): sample evidence is affirming."""
    from trustpod.demo import SAMPLE_REFERENCE_VALUES

    for name, value in SAMPLE_REFERENCE_VALUES.items():
        payload = base64.b64encode(json.dumps({name: value}).encode()).decode()
        core.register_reference_value({"version": "0.1.0", "type": "sample", "payload": payload})


def builtin_kbs(config: Any, *, references: bool = True, **kwargs: Any) -> tuple[Any, KbsCore]:
    """The KBS app over the BUILT-IN attestation service and RVPS (``build_core`` with no
    attestation stand-in), with the sample reference values registered unless ``references``
    is false (then sample evidence appraises as contraindicated)."""
    core, admin = build_core(config, **kwargs)
    if references:
        sample_reference_values(core)
    return create_app(core, admin), core


def admin_jwt_kbs(tmp: Path, resource_policy: str | None = None) -> tuple[Any, KbsCore, Path]:
    """``builtin_kbs`` whose admin API takes a bearer JWT (an ed25519 identity provider, role
    ``admin`` allowed on ``^/kbs/.+$``) over a fixed clock; ``resource_policy``: Rego set as the
    resource policy. Returns the app, the core and a file holding a valid admin token (1 h)."""
    import tomllib

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from trustpod._internal.clock import FixedClock
    from trustpod.kbs.config import parse_config
    from trustpod.kbs.jwks import sign_jwt

    admin = ed25519.Ed25519PrivateKey.generate()
    pub = tmp / "admin.pub"
    pub.write_bytes(
        admin.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    text = (
        "[http_server]\ninsecure_http = true\n[attestation_service]\ntimeout = 5\n"
        '[admin]\nauthorization_mode = "AuthenticatedAuthorization"\n'
        "[admin.authentication.bearer_jwt]\n"
        f'identity_providers = [{{issuer = "test", public_key_uri = "{pub}"}}]\n'
        "[admin.authorization.regex_acl]\n"
        'acls = [{role = "admin", allowed_endpoints = "^/kbs/.+$"}]\n'
    )
    clock = FixedClock(time.time())
    app, core = builtin_kbs(parse_config(tomllib.loads(text), tmp / "kbs.toml"), clock=clock)
    if resource_policy is not None:
        core.set_resource_policy({"policy": b64url(resource_policy.encode())})
    token = tmp / "admin-token"
    token.write_text(
        sign_jwt(admin, {"iss": "test", "role": "admin", "exp": int(clock.time()) + 3600})
    )
    return app, core, token


class ExternalIssuer:
    """Another attestation service's token issuer (an external AS, or one the KBS does not
    trust): ES256 EAR-shaped tokens with a header ``jwk``. Not an attestation service port."""

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

    def _now(self) -> int:
        return int(self.clock.time() if self.clock is not None else time.time())

    def issue(self, runtime_data: dict[str, Any], exp_in: int = 300) -> str:
        now = self._now()
        claims = {
            "eat_profile": "tag:github.com,2024:confidential-containers/Trustee",
            "iat": now,
            "ear.verifier-id": {"developer": "test", "build": "external"},
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


@contextlib.contextmanager
def serve(app: Any, *, cert: Any = None, **options: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1:<ephemeral> in a thread; yields the base URL.

    ``cert``: a ``trustme`` leaf (``LeafCert``) for HTTPS, or None for HTTP. ``options``: more
    ``uvicorn.Config`` settings (e.g. ``http="h11"`` for non-standard methods such as LIST).
    """
    kwargs: dict[str, Any] = dict(options)
    tmp: list[Any] = []
    if cert is not None:
        key_ctx = cert.private_key_pem.tempfile()
        chain_ctx = cert.cert_chain_pems[0].tempfile()
        tmp = [key_ctx, chain_ctx]
        kwargs.update(ssl_keyfile=key_ctx.__enter__(), ssl_certfile=chain_ctx.__enter__())
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


def run_kbs_process(config_path: str, port_file: str) -> None:
    """Entry point of a separate KBS process (built-in AS; the signer key lives in the shared
    storage, so every process on it signs and trusts the same key)."""
    from trustpod.kbs.config import load_config

    app, _ = builtin_kbs(load_config(config_path))
    with serve(app) as url:
        Path(port_file).write_text(url)
        while True:
            time.sleep(1)


if __name__ == "__main__":
    import sys

    run_kbs_process(*sys.argv[1:3])
