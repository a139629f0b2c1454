"""KBS client against an in-test fake KBS (httpx.MockTransport): RCAR 0.4.0 with real JWE."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from trustpod._internal.b64 import b64_decode, b64url_decode, b64url_encode
from trustpod._internal.clock import FixedClock
from trustpod.errors import (
    AuthenticationError,
    ConfigError,
    DependencyError,
    EvidenceError,
    NotFoundError,
    PolicyDenied,
)
from trustpod.guest.attesters.sample import SampleAttester
from trustpod.guest.kbs_client import KbsClient, token_expiry
from trustpod.guest.tee_key import TeeKeyPair
from trustpod.protocol import (
    Attestation,
    Challenge,
    ErrorInformation,
    Request,
    encrypt_response,
    new_nonce,
    runtime_data_digest,
)

T0 = 1_800_000_000.0
TOKEN_LIFETIME = 300


def _fake_jwt(claims: dict[str, Any]) -> str:
    header = b64url_encode(b'{"alg":"none"}')
    return f"{header}.{b64url_encode(json.dumps(claims).encode())}.c2ln"


def _error(status: int, variant: str, detail: str) -> httpx.Response:
    return httpx.Response(status, json=ErrorInformation.for_variant(variant, detail).to_json())


@dataclass
class FakeKbs:
    """Just enough of a KBS: sessions, sample evidence binding, bearer tokens, resources."""

    clock: FixedClock
    resources: dict[str, bytes] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)
    sessions: dict[str, Challenge] = field(default_factory=dict)
    issued: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    attestations: list[Attestation] = field(default_factory=list)
    challenge_extra: Any = ""
    override: Callable[[httpx.Request], httpx.Response | None] | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/kbs/v0/")
        self.calls.append(f"{request.method} {path}")
        if self.override is not None and (resp := self.override(request)) is not None:
            return resp
        if request.method == "POST" and path == "auth":
            req = Request.from_json(json.loads(request.content))
            assert req.supported_hash_algorithms == ("sha256", "sha384", "sha512")
            sid = f"{len(self.sessions):032x}"
            self.sessions[sid] = Challenge(nonce=new_nonce(), extra_params=self.challenge_extra)
            return httpx.Response(
                200,
                json=self.sessions[sid].to_json(),
                headers={
                    "Set-Cookie": f"kbs-session-id={sid}; Expires=Fri, 21 Aug 2099 02:00:31 GMT"
                },
            )
        if request.method == "POST" and path == "attest":
            sid = request.headers.get("cookie", "").removeprefix("kbs-session-id=")
            challenge = self.sessions.get(sid)
            if challenge is None:
                return _error(401, "AttestationError", "Attestation error: session not found")
            att = Attestation.from_json(json.loads(request.content))
            self.attestations.append(att)
            assert att.runtime_data.nonce == challenge.nonce  # nonce echoed
            expected = runtime_data_digest(
                challenge.nonce,
                att.runtime_data.tee_pubkey.to_json(),
                att.tee_evidence.additional_evidence,
                challenge.selected_hash_algorithm,
            )
            evidence = att.tee_evidence.primary_evidence
            if b64_decode(evidence["report_data"]) != expected:
                return _error(401, "AttestationError", "Attestation error: report data mismatch")
            token = _fake_jwt(
                {
                    "exp": int(self.clock.time()) + TOKEN_LIFETIME,
                    "tee-pubkey": att.runtime_data.tee_pubkey.to_json(),
                }
            )
            self.issued.add(token)
            return httpx.Response(200, json={"token": token})
        if request.method == "GET" and path.startswith("resource/"):
            auth = request.headers.get("authorization", "")
            token = auth.removeprefix("Bearer ")
            if token not in self.issued:
                return _error(401, "TokenVerifierError", "token not trusted")
            claims = json.loads(b64url_decode(token.split(".")[1]))
            if claims["exp"] < self.clock.time():
                return _error(401, "TokenVerifierError", "token expired")
            name = path.removeprefix("resource/")
            if name in self.denied:
                return _error(403, "PolicyDeny", "Access denied by policy")
            if name not in self.resources:
                return _error(404, "PluginInternalError", f"resource {name} not found")
            return httpx.Response(
                200, json=encrypt_response(self.resources[name], claims["tee-pubkey"])
            )
        return _error(404, "PluginNotFound", "plugin not found")


@pytest.fixture
def kbs() -> FakeKbs:
    return FakeKbs(clock=FixedClock(T0), resources={"default/key/1": b"s3cret"})


def _client(kbs: FakeKbs, **kwargs: Any) -> KbsClient:
    kwargs.setdefault("attester", SampleAttester())
    return KbsClient(
        "http://kbs.test:8080/",
        transport=httpx.MockTransport(kbs.handle),
        clock=kbs.clock,
        retry_delay_s=0,
        **kwargs,
    )


def test_full_flow_and_token_cache(kbs: FakeKbs) -> None:
    with _client(kbs) as client:
        assert client.get_resource("default/key/1") == b"s3cret"
        assert client.get_resource("/default/key/1/") == b"s3cret"
    assert kbs.calls == [
        "POST auth",
        "POST attest",
        "GET resource/default/key/1",
        "GET resource/default/key/1",
    ]
    att = kbs.attestations[0]
    assert att.init_data is None
    assert att.tee_evidence.primary_evidence["svn"] == "1"
    assert len(b64_decode(att.tee_evidence.primary_evidence["report_data"])) == 48


def test_token_renewed_near_expiry(kbs: FakeKbs) -> None:
    client = _client(kbs)
    token = client.attest()
    assert token_expiry(token) == T0 + TOKEN_LIFETIME
    assert client.get_token() == token
    kbs.clock.advance(TOKEN_LIFETIME - 10)  # inside the 30 s refresh margin
    assert client.get_token() != token
    assert kbs.calls.count("POST attest") == 2


def test_401_on_resource_reattests_once(kbs: FakeKbs) -> None:
    client = _client(kbs)
    client.attest()
    kbs.issued.clear()  # KBS restarted / token revoked
    assert client.get_resource("default/key/1") == b"s3cret"
    assert kbs.calls.count("POST attest") == 2


def test_persistent_401_raises_authentication_error(kbs: FakeKbs) -> None:
    client = _client(kbs)

    def reject(request: httpx.Request) -> httpx.Response | None:
        if request.method == "GET":
            return _error(401, "TokenVerifierError", "bad token signature")
        return None

    kbs.override = reject
    with pytest.raises(AuthenticationError) as info:
        client.get_resource("default/key/1")
    assert "TokenVerifierError: bad token signature" in info.value.message
    assert kbs.calls.count("GET resource/default/key/1") == 2


def test_404_and_403(kbs: FakeKbs) -> None:
    kbs.denied.add("default/key/2")
    client = _client(kbs)
    with pytest.raises(NotFoundError) as nf:
        client.get_resource("default/key/missing")
    assert "PluginInternalError: resource default/key/missing not found" in nf.value.message
    with pytest.raises(PolicyDenied) as pd:
        client.get_resource("default/key/2")
    assert "PolicyDeny" in pd.value.message
    assert kbs.calls.count("POST attest") == 1


def test_non_json_error_body_is_reported_and_handshake_retried(kbs: FakeKbs) -> None:
    kbs.override = lambda r: httpx.Response(401, text="payload reached size limit")
    client = _client(kbs, max_retries=3)
    with pytest.raises(AuthenticationError) as info:
        client.attest()
    assert "not ErrorInformation JSON" in info.value.message
    assert "payload reached size limit" in info.value.message
    assert kbs.calls == ["POST auth"] * 3


def test_attestation_error_detail_surfaces(kbs: FakeKbs) -> None:
    class LyingAttester(SampleAttester):
        def get_evidence(self, report_data: bytes) -> Any:
            return super().get_evidence(b"\0" * 48)

    client = _client(kbs, attester=LyingAttester(), max_retries=2)
    with pytest.raises(AuthenticationError) as info:
        client.attest()
    assert "AttestationError: Attestation error: report data mismatch" in info.value.message


def test_init_data_and_rsa_key_and_selected_hash(kbs: FakeKbs) -> None:
    kbs.challenge_extra = {"selected-hash-algorithm": "sha512"}
    toml = 'algorithm = "sha384"\nversion = "0.1.0"\n[data]\n'
    client = _client(kbs, tee_key=TeeKeyPair.generate_rsa(), init_data_toml=toml)
    assert client.get_resource("default/key/1") == b"s3cret"
    att = kbs.attestations[0]
    assert att.init_data is not None and att.init_data.body == toml
    assert att.runtime_data.tee_pubkey.kty == "RSA"
    assert len(b64_decode(att.tee_evidence.primary_evidence["report_data"])) == 64


def test_passport_mode_without_attester(kbs: FakeKbs) -> None:
    producer = _client(kbs)
    token = producer.attest()
    consumer = _client(kbs, attester=None, tee_key=producer.tee_key, token=token)
    assert consumer.get_resource("default/key/1") == b"s3cret"
    kbs.issued.clear()
    with pytest.raises(AuthenticationError):
        consumer.get_resource("default/key/1")
    with pytest.raises(ConfigError):
        _client(kbs, attester=None).attest()


def test_unreachable_kbs_is_dependency_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    sleeps: list[float] = []
    client = KbsClient(
        "http://127.0.0.1:9",
        SampleAttester(),
        transport=httpx.MockTransport(refuse),
        max_retries=2,
        sleep=sleeps.append,
    )
    with pytest.raises(DependencyError) as info:
        client.attest()
    assert info.value.reason == "kbs.unreachable"
    assert sleeps == [1.0]


@pytest.mark.parametrize("path", ["", "a/../b", "a//b", "./x"])
def test_bad_resource_paths(kbs: FakeKbs, path: str) -> None:
    with pytest.raises(ConfigError):
        _client(kbs).get_resource(path)


def test_oversized_response_rejected(kbs: FakeKbs, monkeypatch: pytest.MonkeyPatch) -> None:
    import trustpod.guest.kbs_client as mod

    monkeypatch.setattr(mod, "MAX_RESPONSE_BYTES", 1000)
    kbs.override = lambda r: httpx.Response(200, content=b"x" * 5000)
    with pytest.raises(EvidenceError) as info:
        _client(kbs).attest()
    assert info.value.reason == "kbs.response_too_large"


def test_gzip_encoded_error_body_is_decoded(kbs: FakeKbs) -> None:
    import gzip

    body = gzip.compress(json.dumps(ErrorInformation.for_variant("X", "zipped").to_json()).encode())
    kbs.override = lambda r: httpx.Response(403, content=body, headers={"Content-Encoding": "gzip"})
    with pytest.raises(PolicyDenied) as info:
        _client(kbs).attest()
    assert "X: zipped" in info.value.message
