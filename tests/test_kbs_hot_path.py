"""KBS hot path over a real socket with the built-in attestation service: the insecure-evidence
counter (not a log line per attestation), the JWE resend memo, the audit explanation."""

from __future__ import annotations

import base64
import logging
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kbs_support import builtin_kbs, serve
from test_kbs_app import handshake
from trustpod.guest.tee_key import TeeKeyPair
from trustpod.kbs.config import parse_config
from trustpod.storage.memory import MemoryStore

CONFIG = '[http_server]\ninsecure_http = true\n[admin]\nauthorization_mode = "InsecureAllowAll"\n'


@pytest.fixture
def kbs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[tuple[str, Any]]:
    with caplog.at_level(logging.WARNING):
        app, core = builtin_kbs(
            parse_config(tomllib.loads(CONFIG), tmp_path / "k.toml"), store=MemoryStore()
        )
    # one warning at start that sample evidence has no root of trust
    assert "without any hardware root of trust" in caplog.text
    with serve(app) as url:
        yield url, core


def _attest(c: httpx.Client, tee: TeeKeyPair) -> str:
    _, body = handshake(c, tee.public_jwk())
    r = c.post("/kbs/v0/attest", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def test_sample_acceptance_is_counted_not_logged(
    kbs: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = kbs
    with caplog.at_level(logging.WARNING), httpx.Client(base_url=url) as c:
        for _ in range(3):
            c.cookies.clear()
            _attest(c, TeeKeyPair.generate_ec())
        metrics = c.get("/metrics").text
    assert "hardware root of trust" not in caplog.text
    line = 'kbs_insecure_evidence_accepted_total{reason="sample.no_root",tee_type="sample"} 3.0'
    assert line in metrics


def test_same_token_same_value_resends_the_same_jwe(kbs: tuple[str, Any]) -> None:
    url, _ = kbs
    tee = TeeKeyPair.generate_ec()
    with httpx.Client(base_url=url) as c:
        assert c.post("/kbs/v0/resource/default/k/1", content=b"one").status_code == 200
        token = _attest(c, tee)
        c.cookies.clear()
        h = {"authorization": f"Bearer {token}"}
        first = c.get("/kbs/v0/resource/default/k/1", headers=h).json()
        again = c.get("/kbs/v0/resource/default/k/1", headers=h).json()
        assert first == again and tee.decrypt(again) == b"one"
        # a changed value is a new message: new CEK, new ephemeral key
        assert c.post("/kbs/v0/resource/default/k/1", content=b"two").status_code == 200
        changed = c.get("/kbs/v0/resource/default/k/1", headers=h).json()
        assert changed["protected"] != first["protected"] and tee.decrypt(changed) == b"two"
        # another token (same TEE key) gets its own JWE
        other = _attest(c, tee)
        c.cookies.clear()
        h2 = {"authorization": f"Bearer {other}"}
        assert c.get("/kbs/v0/resource/default/k/1", headers=h2).json() != changed
        # a deleted resource is 404 even though a response was memoised
        assert c.delete("/kbs/v0/resource/default/k/1").status_code == 200
        assert c.get("/kbs/v0/resource/default/k/1", headers=h).status_code == 404


def test_denial_audit_carries_the_appraisal(kbs: tuple[str, Any]) -> None:
    url, _ = kbs
    deny = base64.urlsafe_b64encode(
        b"package policy\nimport rego.v1\ndefault allow := false\n"
    ).decode()
    with httpx.Client(base_url=url) as c:
        assert c.post("/kbs/v0/resource-policy", json={"policy": deny}).status_code == 200
        assert c.post("/kbs/v0/resource/default/k/1", content=b"v").status_code == 200
        token = _attest(c, TeeKeyPair.generate_ec())
        c.cookies.clear()
        r = c.get("/kbs/v0/resource/default/k/1", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 403
        doc = c.get(f"/kbs/v0/trustpod/explain/{r.headers['x-request-id']}").json()
    appraisal = doc["explain"]["attestation"]
    assert appraisal["submods"]["cpu0"]["ear.status"] == "affirming"
    assert len(appraisal["submods"]["cpu0"]["policy_sha256"]) == 64
    assert "launch_digest" in appraisal["reference_values"]


def test_one_token_verifier_caches_until_exp() -> None:
    from kbs_support import ExternalIssuer
    from trustpod._internal.clock import FixedClock
    from trustpod.attestation.token_verify import TokenVerifier
    from trustpod.errors import AuthenticationError
    from trustpod.kbs import tokens

    assert tokens.TokenVerifier is TokenVerifier  # one class, the KBS only configures it
    clock = FixedClock(1_800_000_000)
    issuer = ExternalIssuer(clock=clock)
    verifier = tokens.build_token_verifier(clock, own_keys=[issuer.jwk])
    token = issuer.issue({"tee-pubkey": {}}, exp_in=100)
    first = verifier.verify(token)
    assert verifier.verify(token) is first  # the second check is a cache hit
    verifier.remember("a.b.c", {"exp": clock.time() + 10})
    assert verifier.verify("a.b.c")["exp"] == clock.time() + 10
    clock.advance(100 + 61)  # past exp + 60 s leeway
    with pytest.raises(AuthenticationError) as err:
        verifier.verify(token)
    assert err.value.reason == "token.expired"
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthenticationError):
        verifier.verify(forged)
