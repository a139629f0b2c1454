"""EAR tokens: claims shape vs upstream's example.token.json, ES256 signing with the upstream
fixture key (header jwk == expected-jwks.json), verification (ours, jwcrypto, joserfc), and
rejections (tampered, expired, wrong x5c anchor, untrusted key)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod._internal.b64 import b64_encode, b64url_decode, b64url_encode
from trustpod._internal.clock import FixedClock
from trustpod.attestation.ear import (
    Appraisal,
    EarTokenSettings,
    claim_status,
    ear_claims,
    submod_names,
    trust_vector_from_policy,
    vector_status,
)
from trustpod.attestation.signer import KEY_NAME, KEY_NAMESPACE, TokenSigner
from trustpod.attestation.token_verify import TokenVerifier, jwk_thumbprint
from trustpod.errors import AuthenticationError, ConfigError, PolicyDenied
from trustpod.storage.memory import MemoryStore

NOW = 1760426134
VECTOR = {
    "instance-identity": 0,
    "configuration": 36,
    "executables": 33,
    "file-system": 0,
    "hardware": 97,
    "runtime-opaque": 0,
    "storage-opaque": 0,
    "sourced-data": 0,
}


@pytest.fixture(scope="module")
def jwk_dir(trustee_vectors: Path) -> Path:
    return trustee_vectors / "attestation-service" / "tests" / "fixtures" / "jwk"


@pytest.fixture(scope="module")
def fixture_signer(jwk_dir: Path) -> TokenSigner:
    return TokenSigner.from_files(jwk_dir / "signing-key.pem", jwk_dir / "cert-chain.pem")


@pytest.fixture(scope="module")
def fixture_cert(jwk_dir: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates((jwk_dir / "cert-chain.pem").read_bytes())[0]


def token_claims(now: int = NOW) -> dict[str, Any]:
    evidence = {
        "init_data": "00",
        "init_data_claims": None,
        "report_data": "74",
        "runtime_data_claims": None,
        "sgx": {"x": 1},
    }
    appraisal = Appraisal(dict(VECTOR), "default", evidence)
    return ear_claims(EarTokenSettings(), {"cpu0": appraisal}, now)


def decode(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    h, c, _ = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(c))


def test_claims_shape_matches_upstream_example(trustee_vectors: Path) -> None:
    example = json.loads(
        (trustee_vectors / "attestation-service" / "docs" / "example.token.json").read_text()
    )
    ours = token_claims()
    # top level: upstream's keys in its order, plus iss (registered in code, §4.3)
    assert [k for k in ours if k != "iss"] == list(example)
    assert ours["iss"] == "CoCo-Attestation-Service"
    assert ours["eat_profile"] == example["eat_profile"]
    assert list(ours["ear.verifier-id"]) == list(example["ear.verifier-id"])
    assert ours["exp"] - ours["iat"] == 300 == example["exp"] - example["iat"]
    sub, ex_sub = ours["submods"]["cpu0"], example["submods"]["cpu0"]
    assert list(sub) == list(ex_sub)
    assert sub["ear.trustworthiness-vector"] == ex_sub["ear.trustworthiness-vector"]
    assert list(sub["ear.trustworthiness-vector"]) == list(ex_sub["ear.trustworthiness-vector"])
    assert sub["ear.status"] == ex_sub["ear.status"] == "contraindicated"
    assert sub["ear.appraisal-policy-id"] == "default"
    assert list(sub["ear.veraison.annotated-evidence"]) == list(
        ex_sub["ear.veraison.annotated-evidence"]
    )


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (0, "none"),
        (1, "none"),
        (-1, "none"),
        (2, "affirming"),
        (-31, "affirming"),
        (32, "warning"),
        (95, "warning"),
        (-96, "contraindicated"),
        (97, "contraindicated"),
        (127, "contraindicated"),
    ],
)
def test_claim_status_tiers(value: int, status: str) -> None:
    assert claim_status(value) == status


def test_worst_status_wins() -> None:
    assert vector_status({"hardware": 2, "executables": 3}) == "affirming"
    assert vector_status({"hardware": 2, "configuration": 36}) == "warning"
    assert vector_status({"hardware": 0}) == "none"
    assert vector_status({"hardware": 2, "executables": 97}) == "contraindicated"


@pytest.mark.parametrize(
    "result",
    [None, {}, [], {"hardware": "2"}, {"hardware": 200}, {"hardware": True}, {"bogus": 2}],
)
def test_bad_trust_claims_rejected(result: Any) -> None:
    with pytest.raises(PolicyDenied) as exc:
        trust_vector_from_policy(result)
    assert exc.value.reason == "policy.trust_claims"


def test_partial_vector_and_extensions() -> None:
    results = {
        "trust_claims": {"hardware": 2},
        "extensions": [{"name": "ear.trustee.identifiers", "key": -18, "value": {"v": 1}}],
    }
    appraisal = Appraisal.from_policy(results, "default", {})
    assert appraisal.to_json()["ear.trustworthiness-vector"] == {"hardware": 2}
    assert appraisal.to_json()["ear.trustee.identifiers"] == {"v": 1}
    with pytest.raises(PolicyDenied):
        Appraisal.from_policy(
            {"trust_claims": {"hardware": 2}, "extensions": [{"name": "ear.status", "value": 1}]},
            "d",
            {},
        )


def test_submod_names() -> None:
    assert submod_names(["cpu", "gpu", "gpu", "cpu"]) == ["cpu0", "gpu0", "gpu1", "cpu1"]


def test_header_jwk_is_upstream_expected_jwks(fixture_signer: TokenSigner, jwk_dir: Path) -> None:
    expected = json.loads((jwk_dir / "expected-jwks.json").read_text())
    assert fixture_signer.jwks() == expected
    header, _ = decode(fixture_signer.sign(token_claims()))
    assert header == {"typ": "JWT", "alg": "ES256", "jwk": expected["keys"][0]}
    assert list(header["jwk"]) == list(expected["keys"][0])


def test_fixture_token_verifies_everywhere(
    fixture_signer: TokenSigner, fixture_cert: x509.Certificate
) -> None:
    token = fixture_signer.sign(token_claims())
    clock = FixedClock(NOW + 10)
    # ours: x5c chained to the trusted fixture certificate
    assert TokenVerifier([fixture_cert], clock=clock).verify(token) == token_claims()
    # ours: trusted JWKS (thumbprint match)
    assert TokenVerifier(trusted_jwks=fixture_signer.jwks()["keys"], clock=clock).verify(token)
    # jwcrypto
    from jwcrypto import jwk, jws

    key = jwk.JWK(**{k: v for k, v in fixture_signer.public_jwk().items() if k != "x5c"})
    obj = jws.JWS()
    obj.deserialize(token)
    obj.verify(key, alg="ES256")
    assert json.loads(obj.payload) == token_claims()
    # joserfc
    from joserfc import jws as rfc_jws
    from joserfc.jwk import ECKey
    from joserfc.jws import JWSRegistry

    registry = JWSRegistry(algorithms=["ES256"])
    registry.max_header_length = 4096  # the x5c header is larger than joserfc's 512 default

    rfc_key = ECKey.import_key({k: v for k, v in fixture_signer.public_jwk().items() if k != "x5c"})
    assert (
        json.loads(rfc_jws.deserialize_compact(token, rfc_key, registry=registry).payload)
        == token_claims()
    )


def test_tampered_token_rejected(
    fixture_signer: TokenSigner, fixture_cert: x509.Certificate
) -> None:
    verifier = TokenVerifier([fixture_cert], clock=FixedClock(NOW))
    token = fixture_signer.sign(token_claims())
    h, c, s = token.split(".")
    forged = dict(token_claims())
    forged["submods"]["cpu0"]["ear.status"] = "affirming"
    bad_claims = b64url_encode(json.dumps(forged, separators=(",", ":")).encode())
    sig = bytearray(b64url_decode(s))
    sig[5] ^= 1
    for bad in (
        f"{h}.{bad_claims}.{s}",
        f"{h}.{c}.{b64url_encode(bytes(sig))}",
        f"{h}.{c}",
        "x.y.z",
        f"{h}.{c}.{s}x",
    ):
        with pytest.raises(AuthenticationError):
            verifier.verify(bad)


def test_expiry_with_leeway(fixture_signer: TokenSigner, fixture_cert: x509.Certificate) -> None:
    token = fixture_signer.sign(token_claims())
    clock = FixedClock(NOW + 300 + 60)
    verifier = TokenVerifier([fixture_cert], clock=clock)
    assert verifier.verify(token)
    clock.advance(1)
    with pytest.raises(AuthenticationError) as exc:
        verifier.verify(token)
    assert exc.value.reason == "token.expired"


def test_exp_required() -> None:
    signer = TokenSigner(ec.generate_private_key(ec.SECP256R1()))
    claims = token_claims()
    del claims["exp"]
    verifier = TokenVerifier(trusted_jwks=[signer.public_jwk()], clock=FixedClock(NOW))
    with pytest.raises(AuthenticationError) as exc:
        verifier.verify(signer.sign(claims))
    assert exc.value.reason == "token.exp"


def _self_signed(key: ec.EllipticCurvePrivateKey, cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2034, 1, 1, tzinfo=dt.UTC))
        .sign(key, hashes.SHA256())
    )


def test_wrong_x5c_anchor_rejected(fixture_signer: TokenSigner) -> None:
    other = _self_signed(ec.generate_private_key(ec.SECP256R1()), "other-ca")
    verifier = TokenVerifier([other], clock=FixedClock(NOW))
    with pytest.raises(AuthenticationError) as exc:
        verifier.verify(fixture_signer.sign(token_claims()))
    assert exc.value.reason == "token.chain"


def test_x5c_leaf_must_match_header_jwk(fixture_cert: x509.Certificate) -> None:
    # a different key whose header carries the fixture's (trusted) x5c
    key = ec.generate_private_key(ec.SECP256R1())
    impostor = TokenSigner(key)
    jwk = {
        **impostor.public_jwk(),
        "x5c": [b64_encode(fixture_cert.public_bytes(serialization.Encoding.DER))],
    }
    header = b64url_encode(json.dumps({"typ": "JWT", "alg": "ES256", "jwk": jwk}).encode())
    token = impostor.sign(token_claims())
    _, c, _ = token.split(".")
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(key.sign(f"{header}.{c}".encode(), ec.ECDSA(hashes.SHA256())))
    forged = f"{header}.{c}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
    with pytest.raises(AuthenticationError) as exc:
        TokenVerifier([fixture_cert], clock=FixedClock(NOW)).verify(forged)
    assert exc.value.reason == "token.chain"


def test_x5c_chain_not_valid_at_clock(
    fixture_signer: TokenSigner, fixture_cert: x509.Certificate
) -> None:
    verifier = TokenVerifier(
        [fixture_cert], clock=FixedClock(dt.datetime(2035, 1, 1, tzinfo=dt.UTC))
    )
    claims = token_claims(int(dt.datetime(2035, 1, 1, tzinfo=dt.UTC).timestamp()))
    with pytest.raises(AuthenticationError) as exc:
        verifier.verify(fixture_signer.sign(claims))
    assert exc.value.reason == "token.chain"


def test_untrusted_header_jwk_and_insecure_mode(caplog: pytest.LogCaptureFixture) -> None:
    signer = TokenSigner(ec.generate_private_key(ec.SECP256R1()))
    token = signer.sign(token_claims())
    trusted = TokenSigner(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(AuthenticationError) as exc:
        TokenVerifier(trusted_jwks=[trusted.public_jwk()], clock=FixedClock(NOW)).verify(token)
    assert exc.value.reason == "token.untrusted"
    insecure = TokenVerifier(insecure_header_jwk=True, clock=FixedClock(NOW))
    assert "insecure_header_jwk" in caplog.text
    assert insecure.verify(token)["iss"] == "CoCo-Attestation-Service"


def test_kid_lookup() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = TokenSigner(key)
    jwk = {**signer.public_jwk(), "kid": "as-1"}
    header = b64url_encode(json.dumps({"alg": "ES256", "kid": "as-1"}).encode())
    _, c, _ = signer.sign(token_claims()).split(".")
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(key.sign(f"{header}.{c}".encode(), ec.ECDSA(hashes.SHA256())))
    token = f"{header}.{c}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
    assert TokenVerifier(trusted_jwks=[jwk], clock=FixedClock(NOW)).verify(token)
    other = {**TokenSigner(ec.generate_private_key(ec.SECP256R1())).public_jwk(), "kid": "x"}
    with pytest.raises(AuthenticationError):
        TokenVerifier(trusted_jwks=[other], clock=FixedClock(NOW)).verify(token)


def test_no_trust_material_is_config_error() -> None:
    with pytest.raises(ConfigError):
        TokenVerifier()


def test_signer_rejects_non_p256(tmp_path: Path) -> None:
    for key in (
        ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ):
        path = tmp_path / "k.pem"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        with pytest.raises(ConfigError) as exc:
            TokenSigner.from_files(path)
        assert exc.value.reason == "config.signer_key"
    with pytest.raises(ConfigError):
        TokenSigner.from_files(tmp_path / "missing.pem")


def test_signer_cert_must_match_key(jwk_dir: Path, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "k.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError):
        TokenSigner.from_files(path, jwk_dir / "cert-chain.pem")


def test_persistent_key_shared_by_replicas() -> None:
    store = MemoryStore()
    a, b = TokenSigner.persistent(store), TokenSigner.persistent(store)
    assert a.public_jwk() == b.public_jwk()
    assert store.get(KEY_NAMESPACE, KEY_NAME) is not None
    token = a.sign(token_claims())
    assert TokenVerifier(trusted_jwks=[b.public_jwk()], clock=FixedClock(NOW)).verify(token)


def test_persistent_key_race_keeps_first_writer() -> None:
    class RacingStore(MemoryStore):
        """Another replica writes its key between our get() and put()."""

        def __init__(self) -> None:
            super().__init__()
            self.raced = False

        def get(self, namespace: str, key: str) -> bytes | None:
            value = super().get(namespace, key)
            if value is None and not self.raced:
                self.raced = True
                other = ec.generate_private_key(ec.SECP256R1())
                super().put(
                    namespace,
                    key,
                    other.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    ),
                )
            return value

    store = RacingStore()
    mine = TokenSigner.persistent(store)
    assert mine.public_jwk() == TokenSigner.persistent(store).public_jwk()


def test_thumbprint_matches_jwcrypto(fixture_signer: TokenSigner) -> None:
    from jwcrypto import jwk

    public = fixture_signer.public_jwk()
    key = jwk.JWK(**{k: v for k, v in public.items() if k != "x5c"})
    assert jwk_thumbprint(public) == b64url_decode(key.thumbprint()).hex()


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.lists(st.binary(max_size=80), min_size=1, max_size=4).map(
            lambda parts: ".".join(b64url_encode(p) for p in parts)
        ),
        st.dictionaries(
            st.sampled_from(["alg", "jwk", "kid", "typ"]),
            st.one_of(
                st.text(max_size=10),
                st.none(),
                st.dictionaries(
                    st.sampled_from(["kty", "crv", "x", "y", "x5c"]),
                    st.text(max_size=44),
                    max_size=5,
                ),
            ),
        ).map(lambda h: b64url_encode(json.dumps(h).encode()) + ".e30.AAAA"),
    )
)
def test_random_tokens_raise_only_authentication_errors(token: str) -> None:
    verifier = TokenVerifier([_FUZZ_ROOT], insecure_header_jwk=False, clock=FixedClock(NOW))
    with pytest.raises(AuthenticationError):
        verifier.verify(token)


_FUZZ_ROOT = _self_signed(ec.generate_private_key(ec.SECP256R1()), "fuzz-root")
