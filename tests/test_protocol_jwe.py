"""Resource JWE (trustee-protocol.md §1.7): exact layout, interop with jwcrypto and joserfc."""

from __future__ import annotations

import json
import logging
import warnings
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc.jwe import decrypt_json
from joserfc.jwk import ECKey, RSAKey
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

from trustpod._internal.b64 import b64url_decode, b64url_encode
from trustpod.errors import EvidenceError, TrustpodError, VerificationError
from trustpod.protocol import TeePubKey, decrypt_response, encrypt_response

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_RSA_2048 = rsa.generate_private_key(65537, 2048)
KEYS: dict[str, tuple[PrivateKey, str]] = {
    "p256": (ec.generate_private_key(ec.SECP256R1()), "ECDH-ES+A256KW"),
    "p521": (ec.generate_private_key(ec.SECP521R1()), "ECDH-ES+A256KW"),
    "rsa-oaep-256": (_RSA_2048, "RSA-OAEP-256"),
    "rsa1_5": (_RSA_2048, "RSA1_5"),
}
PLAINTEXT = b"top secret resource \x00\xff" * 3


def _pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _encrypt(name: str, plaintext: bytes = PLAINTEXT) -> dict[str, str]:
    key, alg = KEYS[name]
    tee = TeePubKey.from_public_key(key.public_key(), alg)
    return encrypt_response(plaintext, tee, insecure_allow_rsa1_5=(alg == "RSA1_5"))


def test_aad_vector_from_kbs_types() -> None:
    header = json.dumps({"alg": "fakealg", "enc": "fakeenc"}, separators=(",", ":"))
    assert b64url_encode(header.encode()) == "eyJhbGciOiJmYWtlYWxnIiwiZW5jIjoiZmFrZWVuYyJ9"


@pytest.mark.parametrize("name", sorted(KEYS))
def test_layout_is_exactly_upstreams(name: str) -> None:
    jwe = _encrypt(name)
    assert list(jwe) == ["protected", "encrypted_key", "iv", "ciphertext", "tag"]
    for value in jwe.values():
        assert "=" not in value and "+" not in value and "/" not in value
    assert len(b64url_decode(jwe["iv"])) == 12
    assert len(b64url_decode(jwe["tag"])) == 16
    assert len(b64url_decode(jwe["ciphertext"])) == len(PLAINTEXT)
    header_text = b64url_decode(jwe["protected"]).decode()
    header = json.loads(header_text)
    assert list(header)[:2] == ["alg", "enc"] and header["enc"] == "A256GCM"
    assert header["alg"] == KEYS[name][1]
    assert " " not in header_text
    if name.startswith("p"):
        assert list(header) == ["alg", "enc", "epk"]
        assert list(header["epk"]) == ["crv", "kty", "x", "y"]
        assert len(b64url_decode(jwe["encrypted_key"])) == 40
    else:
        assert header_text == f'{{"alg":"{header["alg"]}","enc":"A256GCM"}}'


@pytest.mark.parametrize("name", sorted(KEYS))
def test_our_jwe_decrypts_with_jwcrypto_and_joserfc(name: str) -> None:
    key, alg = KEYS[name]
    jwe = _encrypt(name)
    token = jwcrypto_jwe.JWE(algs=[alg, "A256GCM"])
    token.deserialize(json.dumps(jwe), key=jwcrypto_jwk.JWK.from_pem(_pem(key)))
    assert token.payload == PLAINTEXT
    rkey = (ECKey if isinstance(key, ec.EllipticCurvePrivateKey) else RSAKey).import_key(_pem(key))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert decrypt_json(jwe, rkey, algorithms=[alg, "A256GCM"]).plaintext == PLAINTEXT
    assert decrypt_response(jwe, key, insecure_allow_rsa1_5=(alg == "RSA1_5")) == PLAINTEXT


@pytest.mark.parametrize("name", sorted(KEYS))
def test_jwcrypto_jwe_decrypts_with_decrypt_response(name: str) -> None:
    key, alg = KEYS[name]
    pub = jwcrypto_jwk.JWK.from_pem(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    token = jwcrypto_jwe.JWE(
        PLAINTEXT, protected=json.dumps({"alg": alg, "enc": "A256GCM"}), algs=[alg, "A256GCM"]
    )
    token.add_recipient(pub)
    flattened = json.loads(token.serialize())
    assert decrypt_response(flattened, key, insecure_allow_rsa1_5=(alg == "RSA1_5")) == PLAINTEXT


def test_rsa1_5_needs_the_insecure_flag_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    tee = TeePubKey.from_public_key(_RSA_2048.public_key(), "RSA1_5")
    with pytest.raises(EvidenceError) as info:
        encrypt_response(b"x", tee)
    assert info.value.reason == "kbs.jwe_unsupported"
    with caplog.at_level(logging.WARNING):
        jwe = encrypt_response(b"x", tee, insecure_allow_rsa1_5=True)
        encrypt_response(b"x", tee, insecure_allow_rsa1_5=True)
    assert sum("RSA1_5" in r.message for r in caplog.records) == 2
    with pytest.raises(EvidenceError):
        decrypt_response(jwe, _RSA_2048)


@pytest.mark.parametrize(
    "jwk",
    [
        TeePubKey.from_public_key(ec.generate_private_key(ec.SECP384R1()).public_key()).to_json(),
        {**TeePubKey.from_public_key(KEYS["p256"][0].public_key()).to_json(), "alg": "ECDH-ES"},
        {**TeePubKey.from_public_key(_RSA_2048.public_key()).to_json(), "alg": "RSA-OAEP"},
        TeePubKey.from_public_key(rsa.generate_private_key(65537, 1024).public_key()).to_json(),
    ],
)
def test_unsupported_keys_rejected(jwk: dict[str, str]) -> None:
    with pytest.raises(EvidenceError) as info:
        encrypt_response(b"x", jwk)
    assert info.value.reason == "kbs.jwe_unsupported"


def test_point_not_on_curve_rejected() -> None:
    jwk = TeePubKey.from_public_key(KEYS["p256"][0].public_key()).to_json()
    jwk["y"] = b64url_encode(b"\x01" * 32)
    with pytest.raises(EvidenceError) as info:
        encrypt_response(b"x", jwk)
    assert info.value.reason == "kbs.jwe_malformed"


def _flip(text: str) -> str:
    raw = bytearray(b64url_decode(text))
    raw[len(raw) // 2] ^= 0x01
    return b64url_encode(bytes(raw))


@pytest.mark.parametrize("name", sorted(KEYS))
@pytest.mark.parametrize("field", ["ciphertext", "tag", "iv", "encrypted_key", "protected"])
def test_tamper_rejected(name: str, field: str) -> None:
    key, alg = KEYS[name]
    jwe = _encrypt(name)
    if field == "protected":
        header = json.loads(b64url_decode(jwe["protected"]))
        header["kid"] = "x"  # a different but valid header changes the AAD
        jwe[field] = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    else:
        jwe[field] = _flip(jwe[field])
    with pytest.raises(TrustpodError):
        decrypt_response(jwe, key, insecure_allow_rsa1_5=(alg == "RSA1_5"))


def test_wrong_key_and_aad_member() -> None:
    jwe = _encrypt("p256")
    with pytest.raises(VerificationError):
        decrypt_response(jwe, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(EvidenceError):
        decrypt_response(jwe, KEYS["rsa-oaep-256"][0])
    with pytest.raises(VerificationError):
        decrypt_response({**jwe, "aad": "ZXh0cmE"}, KEYS["p256"][0])


def test_enc_other_than_a256gcm_rejected() -> None:
    jwe = _encrypt("p256")
    header = json.loads(b64url_decode(jwe["protected"]))
    header["enc"] = "A128GCM"
    jwe["protected"] = b64url_encode(json.dumps(header).encode())
    with pytest.raises(EvidenceError) as info:
        decrypt_response(jwe, KEYS["p256"][0])
    assert info.value.reason == "kbs.jwe_unsupported"


_values = (
    st.none() | st.integers() | st.text(max_size=40) | st.binary(max_size=40).map(b64url_encode)
)


@settings(max_examples=150, deadline=None)
@given(
    field=st.sampled_from(["protected", "encrypted_key", "iv", "ciphertext", "tag", "epk"]),
    value=_values,
)
def test_decrypt_random_members_raise_only_typed_errors(field: str, value: Any) -> None:
    jwe: dict[str, Any] = dict(_encrypt("p256", b"abc"))
    if field == "epk":
        header = json.loads(b64url_decode(jwe["protected"]))
        header["epk"] = {**header["epk"], "x": value}
        jwe["protected"] = b64url_encode(json.dumps(header).encode())
    else:
        jwe[field] = value
    try:
        decrypt_response(jwe, KEYS["p256"][0])
    except TrustpodError:
        pass


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=12), c, max_size=6),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(value=_json_values)
def test_decrypt_random_json_raises_only_typed_errors(value: Any) -> None:
    for key in (KEYS["p256"][0], KEYS["rsa-oaep-256"][0]):
        try:
            decrypt_response(value, key)
        except TrustpodError:
            pass
