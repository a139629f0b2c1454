"""Sealed-secret format (guest-and-control-plane.md §3.3): sign, parse, verify, tamper, keys."""

from __future__ import annotations

import base64
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod._internal.b64 import b64url_decode, b64url_encode
from trustpod.errors import EvidenceError, TrustpodError, VerificationError
from trustpod.sealed import (
    EnvelopeSecret,
    ResourceUri,
    VaultSecret,
    classify_kid,
    generate_signing_key,
    insecure_seal_unsigned,
    load_private_jwk,
    load_public_key,
    open_envelope,
    parse,
    private_jwk,
    public_jwk,
    seal,
    seal_envelope,
    verify,
)

KEY = generate_signing_key()
OTHER = generate_signing_key()
VAULT = VaultSecret(name="kbs:///default/key/1")


def _sealed(payload: VaultSecret | EnvelopeSecret = VAULT, kid: str = "k1") -> str:
    return seal(payload, KEY, kid)


def test_round_trip_vault_has_upstream_shape() -> None:
    text = _sealed()
    prefix, hdr, body, sig = text.split(".")
    assert prefix == "sealed" and "=" not in text
    assert json.loads(b64url_decode(hdr)) == {"alg": "ES256", "kid": "k1"}
    assert json.loads(b64url_decode(body)) == {
        "version": "0.1.0",
        "type": "vault",
        "name": "kbs:///default/key/1",
        "provider": "kbs",
        "provider_settings": {},
        "annotations": {},
    }
    assert len(b64url_decode(sig)) == 64
    parsed = parse(text)
    verify(parsed, KEY.public_key())
    assert parsed.kid == "k1" and parsed.payload == VAULT and parsed.signed


def test_upstream_style_payload_bytes_verify() -> None:
    # A token signed over arbitrary (upstream serde) payload JSON bytes verifies too.
    body = b'{"version":"0.1.0","type":"vault","name":"kbs:///a/b/c","provider":"kbs",'
    body += b'"provider_settings":{},"annotations":{},"extra":1}'
    hdr = b64url_encode(b'{"alg":"ES256","kid":"kbs:///default/sealed-key/1"}')
    signing_input = f"{hdr}.{b64url_encode(body)}"
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    sig = b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    parsed = parse(f"sealed.{signing_input}.{sig}")
    verify(parsed, KEY.public_key())
    assert parsed.payload == VaultSecret(name="kbs:///a/b/c")


@pytest.mark.parametrize("index", [1, 2, 3])
def test_tampering_any_section_is_rejected(index: int) -> None:
    parts = _sealed().split(".")
    raw = bytearray(b64url_decode(parts[index]))
    if index == 1:
        raw = bytearray(json.dumps({"alg": "ES256", "kid": "k2"}).encode())
    elif index == 2:
        raw = bytearray(raw.replace(b"key/1", b"key/2"))
    else:
        raw[5] ^= 1
    parts[index] = b64url_encode(bytes(raw))
    with pytest.raises(VerificationError) as exc:
        verify(parse(".".join(parts)), KEY.public_key())
    assert exc.value.reason == "sealed.signature"


def test_wrong_key_rejected() -> None:
    with pytest.raises(VerificationError, match="does not verify"):
        verify(parse(_sealed()), OTHER.public_key())


@pytest.mark.parametrize("alg", ["none", "HS256", "ES384", None])
def test_other_algs_rejected(alg: str | None) -> None:
    parts = _sealed().split(".")
    parts[1] = b64url_encode(json.dumps({"alg": alg, "kid": "k1"}).encode())
    with pytest.raises(VerificationError) as exc:
        parse(".".join(parts))
    assert exc.value.reason == "sealed.alg"


def test_padding_and_section_count_rejected() -> None:
    text = _sealed()
    with pytest.raises(EvidenceError):
        parse(text + ".x")
    with pytest.raises(EvidenceError):
        parse("notsealed" + text[6:])
    padded = text.split(".")
    padded[2] += "=" * (-len(padded[2]) % 4 or 1)
    with pytest.raises(EvidenceError) as exc:
        parse(".".join(padded))
    assert exc.value.reason == "sealed.padding"


def test_legacy_only_with_skip_verification() -> None:
    legacy = insecure_seal_unsigned(VAULT)
    assert legacy.startswith("sealed.fakejwsheader.") and legacy.endswith(".fakesignature")
    with pytest.raises(VerificationError) as exc:
        parse(legacy)
    assert exc.value.reason == "sealed.unsigned"
    parsed = parse(legacy, allow_unsigned=True)
    assert not parsed.signed and parsed.payload == VAULT
    with pytest.raises(VerificationError):
        verify(parsed, KEY.public_key())
    # upstream's skip mode ignores a garbage header as well
    garbage = legacy.replace("fakejwsheader", "abc")
    assert parse(garbage, allow_unsigned=True).payload == VAULT


def test_payload_rules() -> None:
    def body(obj: object) -> str:
        return f"sealed.fakejwsheader.{b64url_encode(json.dumps(obj).encode())}.fakesignature"

    good = VAULT.to_json()
    for broken in (
        {**good, "version": "0.2.0"},
        {**good, "type": "kms"},
        {k: v for k, v in good.items() if k != "annotations"},
        {k: v for k, v in good.items() if k != "provider_settings"},
        {**good, "name": 5},
        [good],
    ):
        with pytest.raises(EvidenceError) as exc:
            parse(body(broken), allow_unsigned=True)
        assert exc.value.reason in ("sealed.payload", "sealed.malformed")


def test_envelope_round_trip_and_failures() -> None:
    kek = os.urandom(32)
    env = seal_envelope(b"top secret", kek, "kbs:///default/kek/1", annotations={"a": "b"})
    text = _sealed(env)
    parsed = parse(text)
    verify(parsed, KEY.public_key())
    assert isinstance(parsed.payload, EnvelopeSecret)
    assert parsed.payload.to_json()["wrap_type"] == "A256GCM"
    assert len(base64.b64decode(parsed.payload.to_json()["iv"])) == 12
    assert open_envelope(parsed.payload, kek) == b"top secret"
    assert open_envelope(parsed.payload, base64.b64encode(kek)) == b"top secret"
    with pytest.raises(VerificationError) as exc:
        open_envelope(parsed.payload, os.urandom(32))
    assert exc.value.reason == "sealed.envelope_decrypt"
    with pytest.raises(EvidenceError):
        open_envelope(parsed.payload, b"short")
    import dataclasses

    flipped = bytearray(env.encrypted_data)
    flipped[0] ^= 1
    with pytest.raises(VerificationError):
        open_envelope(dataclasses.replace(env, encrypted_data=bytes(flipped)), kek)
    with pytest.raises(EvidenceError):
        open_envelope(dataclasses.replace(env, provider="aliyun"), kek)


def test_jwk_round_trip_and_pem() -> None:
    from cryptography.hazmat.primitives import serialization

    priv = json.dumps(private_jwk(KEY, "k1")).encode()
    pub = json.dumps(public_jwk(KEY.public_key(), "k1")).encode()
    assert load_private_jwk(priv).private_numbers() == KEY.private_numbers()
    assert load_public_key(pub).public_numbers() == KEY.public_key().public_numbers()
    pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert load_public_key(pem).public_numbers() == KEY.public_key().public_numbers()
    with pytest.raises(EvidenceError):
        load_private_jwk(pub)
    mismatched = {**private_jwk(KEY), "x": public_jwk(OTHER.public_key())["x"]}
    with pytest.raises(EvidenceError):
        load_private_jwk(json.dumps(mismatched).encode())
    with pytest.raises(EvidenceError):
        load_public_key(json.dumps({"kty": "RSA", "n": "AQAB", "e": "AQAB"}).encode())


@pytest.mark.parametrize(
    "kid", ["../etc/passwd", "a/b", "..", ".hidden", "", "a\\b", "x" * 200, "kbs:///../a/b"]
)
def test_bad_kids_refused(kid: str) -> None:
    with pytest.raises(EvidenceError):
        classify_kid(kid)


def test_kid_classification() -> None:
    assert classify_kid("my-key.v1").local_name == "my-key.v1"
    ref = classify_kid("kbs:///default/sealed-key/1")
    assert ref.uri is not None and ref.uri.kbs_path == "resource/default/sealed-key/1"


def test_resource_uris() -> None:
    u = ResourceUri.parse("kbs://kbs.example:8080/default/key/1")
    assert (u.plugin, u.host, u.path) == ("resource", "kbs.example:8080", "default/key/1")
    p = ResourceUri.parse("kbs+nebula-ca:///credential?name=n1&ip=10.0.0.1/24")
    assert p.kbs_path == "nebula-ca/credential?name=n1&ip=10.0.0.1/24"
    assert str(p) == "kbs+nebula-ca:///credential?name=n1&ip=10.0.0.1/24"
    for bad in ("kbs:///a/b", "kbs:///a/b/c/d", "http:///a/b/c", "kbs:///a/../c", "kbs:///a//c"):
        with pytest.raises(EvidenceError):
            ResourceUri.parse(bad)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_parse_random_text_raises_only_typed_errors(text: str) -> None:
    for allow in (False, True):
        try:
            parse(text, allow_unsigned=allow)
        except TrustpodError:
            pass


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=3))
def test_truncated_or_mutated_sealed_raises_typed(cut: int, junk: bytes) -> None:
    text = _sealed()
    mutated = text[:cut] + junk.hex() + text[cut + len(junk) :]
    for candidate in (text[:cut], mutated):
        try:
            verify(parse(candidate), KEY.public_key())
        except TrustpodError:
            continue
        assert candidate == text


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=120))
def test_uri_parser_raises_only_typed(text: str) -> None:
    for candidate in (text, "kbs:///" + text, "kbs+" + text):
        try:
            ResourceUri.parse(candidate)
        except TrustpodError:
            pass


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
_FIELDS = [
    "version",
    "type",
    "name",
    "provider",
    "provider_settings",
    "annotations",
    "key_id",
    "encrypted_key",
    "encrypted_data",
    "wrap_type",
    "iv",
]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(_FIELDS), _JSON), st.sampled_from(["vault", "envelope"]))
def test_random_payload_objects_raise_only_typed(obj: dict[str, object], kind: str) -> None:
    from trustpod.sealed import parse_payload

    for candidate in (obj, {**obj, "version": "0.1.0", "type": kind}):
        try:
            parse_payload(json.dumps(candidate).encode())
        except TrustpodError:
            pass
