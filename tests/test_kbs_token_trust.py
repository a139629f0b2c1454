"""Tokens from another attestation service: trusted through ``[attestation_token]`` settings,
using upstream's AS signing fixture (key + certificate + expected JWKS, read in place)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kbs_support import ExternalIssuer, builtin_kbs, serve
from trustpod.errors import ConfigError
from trustpod.guest.tee_key import TeeKeyPair
from trustpod.kbs.config import parse_config
from trustpod.kbs.resource_policy import PRESETS
from trustpod.storage.memory import MemoryStore


@pytest.fixture(scope="module")
def fixture_dir(trustee_vectors: Path) -> Path:
    d = trustee_vectors / "attestation-service" / "tests" / "fixtures" / "jwk"
    if not d.is_dir():
        pytest.skip("AS jwk fixtures not in the vectors")
    return d


def external_as(fixture_dir: Path, *, x5c: bool) -> ExternalIssuer:
    """An AS signing with upstream's fixture key, header jwk as in expected-jwks.json."""
    fake = ExternalIssuer()
    key = serialization.load_pem_private_key(
        (fixture_dir / "signing-key.pem").read_bytes(), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    fake.key = key
    jwk = json.loads((fixture_dir / "expected-jwks.json").read_text())["keys"][0]
    fake.jwk = {k: v for k, v in jwk.items() if x5c or k != "x5c"}
    return fake


def run(fixture_dir: Path, tmp_path: Path, token_section: str, *, x5c: bool) -> tuple[int, str]:
    text = f"""[http_server]
insecure_http = true
[admin]
authorization_mode = "InsecureAllowAll"
[attestation_token]
{token_section}
"""
    fake = external_as(fixture_dir, x5c=x5c)
    config = parse_config(tomllib.loads(text), tmp_path / "kbs-config.toml")
    app, _ = builtin_kbs(config, store=MemoryStore())  # the KBS's own AS: always trusted
    tee = TeeKeyPair.generate_ec()
    token = fake.issue({"tee-pubkey": tee.public_jwk()})
    with serve(app) as url, httpx.Client(base_url=url) as c:
        c.post("/kbs/v0/resource-policy", json={"policy": _b64(PRESETS["allow-all"])})
        assert c.post("/kbs/v0/resource/default/key/ext", content=b"ext").status_code == 200
        r = c.get("/kbs/v0/resource/default/key/ext", headers={"authorization": f"Bearer {token}"})
        if r.status_code == 200:
            return 200, tee.decrypt(r.json()).decode()
        return r.status_code, r.json()["detail"]


def _b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def test_x5c_chain_to_trusted_certs(fixture_dir: Path, tmp_path: Path) -> None:
    section = f'trusted_certs_paths = ["{fixture_dir / "cert-chain.pem"}"]'
    assert run(fixture_dir, tmp_path, section, x5c=True) == (200, "ext")


def test_trusted_jwk_set_file(fixture_dir: Path, tmp_path: Path) -> None:
    section = f'trusted_jwk_sets = ["file://{fixture_dir / "expected-jwks.json"}"]'
    assert run(fixture_dir, tmp_path, section, x5c=False) == (200, "ext")


def test_untrusted_external_token(fixture_dir: Path, tmp_path: Path) -> None:
    status, detail = run(fixture_dir, tmp_path, "", x5c=True)
    assert status == 401 and "untrusted" in detail


def test_insecure_header_jwk(fixture_dir: Path, tmp_path: Path) -> None:
    assert run(fixture_dir, tmp_path, "insecure_header_jwk = true", x5c=False) == (200, "ext")


def test_remote_trust_uri_refused(fixture_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="remote URI"):
        run(fixture_dir, tmp_path, 'trusted_jwk_sets = ["https://as.example/jwks"]', x5c=False)
