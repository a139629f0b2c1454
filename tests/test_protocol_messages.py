"""trustpod.protocol messages, runtime-data binding and nonces (trustee-protocol.md §1.2-§1.5)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod._internal.jcs import canonical_json, jcs_digest
from trustpod.errors import EvidenceError
from trustpod.protocol import (
    KNOWN_TEES,
    PROTOCOL_VERSION,
    Attestation,
    AttestResponse,
    Challenge,
    ErrorInformation,
    Request,
    TeePubKey,
    error_type_url,
    new_nonce,
    runtime_data_digest,
    runtime_data_object,
)
from trustpod.protocol.runtime_data import device_runtime_data_object, hash_algorithm_for_tee

EC_KEY = TeePubKey.from_public_key(ec.generate_private_key(ec.SECP256R1()).public_key())


def _attestation_json(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "init-data": {"format": "toml", "body": 'version = "0.1.0"\n'},
        "runtime-data": {"nonce": "bm9uY2U=", "tee-pubkey": EC_KEY.to_json()},
        "tee-evidence": {"primary_evidence": {"svn": "1"}, "additional_evidence": ""},
    }
    body.update(overrides)
    return body


def test_jcs_vector_from_upstream() -> None:
    # attestation-service/src/lib.rs test vector (PROVENANCE.md).
    digest = jcs_digest({"b": 1, "a": "test", "c": {"d": "e"}}, "sha384")
    assert digest.hex() == (
        "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c"
        "4597480a186427c813ca941da78870c3"
    )


def test_runtime_data_object_has_three_keys_even_when_empty() -> None:
    obj = runtime_data_object("n", EC_KEY.to_json())
    assert sorted(obj) == ["additional-evidence", "nonce", "tee-pubkey"]
    assert obj["additional-evidence"] == ""
    canon = canonical_json(obj)
    assert canon.startswith(b'{"additional-evidence":"","nonce":"n","tee-pubkey":{"alg":')
    assert runtime_data_digest("n", EC_KEY.to_json()) == jcs_digest(obj, "sha384")
    assert len(runtime_data_digest("n", EC_KEY.to_json(), "", "sha512")) == 64
    assert sorted(device_runtime_data_object("n", EC_KEY.to_json())) == ["nonce", "tee-pubkey"]
    assert hash_algorithm_for_tee("se") == "sha512"
    assert hash_algorithm_for_tee("snp") == "sha384"


def test_nonce_is_std_base64_of_32_bytes() -> None:
    nonces = {new_nonce() for _ in range(20)}
    assert len(nonces) == 20
    for n in nonces:
        assert len(n) == 44 and n.endswith("=")
        assert len(base64.b64decode(n, validate=True)) == 32


def test_request_roundtrip_and_hash_algorithms() -> None:
    obj = {
        "version": "0.4.0",
        "tee": "snp",
        "extra-params": {"supported-hash-algorithms": ["sha256", "SHA384", 7]},
    }
    req = Request.from_json(obj)
    assert (req.version, req.tee) == (PROTOCOL_VERSION, "snp")
    assert req.supported_hash_algorithms == ("sha256", "sha384")
    assert req.to_json() == obj
    assert Request.from_json({**obj, "extra-params": ""}).supported_hash_algorithms == ()


def test_request_version_mismatch_uses_upstream_text() -> None:
    with pytest.raises(EvidenceError) as info:
        Request.from_json({"version": "0.1.1", "tee": "sample", "extra-params": ""})
    assert info.value.reason == "kbs.version_mismatch"
    assert info.value.message == (
        "KBS Client Protocol Version Mismatch: expect =0.4.0 while the request is 0.1.1"
    )


@pytest.mark.parametrize(
    "obj",
    [
        [],
        {"version": "0.4.0", "tee": "nope", "extra-params": ""},
        {"version": "0.4.0", "tee": "snp"},
        {"version": 4, "tee": "snp", "extra-params": ""},
    ],
)
def test_request_bad_shape(obj: Any) -> None:
    with pytest.raises(EvidenceError) as info:
        Request.from_json(obj)
    assert info.value.reason == "kbs.bad_request"


def test_known_tees_are_serde_names() -> None:
    assert {"az-snp-vtpm", "az-tdx-vtpm", "sample", "sampledevice", "hygondcu"} <= KNOWN_TEES
    assert "azsnpvtpm" not in KNOWN_TEES


def test_challenge() -> None:
    ch = Challenge(nonce="abc")
    assert ch.to_json() == {"nonce": "abc", "extra-params": ""}
    assert ch.selected_hash_algorithm == "sha384"
    se = Challenge.from_json({"nonce": "x", "extra-params": {"selected-hash-algorithm": "SHA512"}})
    assert se.selected_hash_algorithm == "sha512"
    with pytest.raises(EvidenceError):
        _ = Challenge(
            nonce="x", extra_params={"selected-hash-algorithm": "sm3"}
        ).selected_hash_algorithm


def test_attestation_parse_and_roundtrip() -> None:
    att = Attestation.from_json(_attestation_json())
    assert att.init_data is not None and att.init_data.format == "toml"
    assert att.runtime_data.tee_pubkey == EC_KEY
    assert att.tee_evidence.primary_evidence == {"svn": "1"}
    assert att.to_json() == _attestation_json()
    no_init = Attestation.from_json(_attestation_json(**{"init-data": None}))
    assert no_init.init_data is None


def test_tee_pubkey_keeps_members_as_sent_and_drops_unknown() -> None:
    jwk = {**EC_KEY.to_json(), "kid": "ignored"}
    assert TeePubKey.from_json(jwk).to_json() == EC_KEY.to_json()
    rsa_key = rsa.generate_private_key(65537, 2048).public_key()
    rjwk = TeePubKey.from_public_key(rsa_key).to_json()
    assert list(rjwk) == ["kty", "alg", "n", "e"] and rjwk["alg"] == "RSA-OAEP-256"
    assert TeePubKey.from_json(rjwk).to_json() == rjwk


@pytest.mark.parametrize(
    "mutate",
    [
        lambda j: j.update(kty="OKP"),
        lambda j: j.update(crv="P-192"),
        lambda j: j.update(x=j["x"][:-2]),
        lambda j: j.update(y="!!"),
        lambda j: j.pop("alg"),
        lambda j: j.update(alg=""),
    ],
)
def test_tee_pubkey_rejects_bad_jwk(mutate: Any) -> None:
    jwk = EC_KEY.to_json()
    mutate(jwk)
    with pytest.raises(EvidenceError):
        TeePubKey.from_json(jwk)


def test_attestation_bad_shapes() -> None:
    for body in (
        _attestation_json(**{"runtime-data": {"nonce": 1, "tee-pubkey": EC_KEY.to_json()}}),
        _attestation_json(**{"tee-evidence": {"additional_evidence": ""}}),
        _attestation_json(**{"tee-evidence": {"primary_evidence": {}, "additional_evidence": 3}}),
        _attestation_json(**{"init-data": {"format": "toml"}}),
        {k: v for k, v in _attestation_json().items() if k != "runtime-data"},
    ):
        with pytest.raises(EvidenceError) as info:
            Attestation.from_json(body)
        assert info.value.reason == "kbs.bad_request"


def test_error_information_and_token() -> None:
    info = ErrorInformation.for_variant("PolicyDeny", "denied")
    assert info.type == "https://github.com/confidential-containers/kbs/errors/PolicyDeny"
    assert info.type == error_type_url("PolicyDeny")
    assert info.variant == "PolicyDeny"
    assert ErrorInformation.from_json(json.loads(json.dumps(info.to_json()))) == info
    assert AttestResponse.from_json({"token": "a.b.c"}).token == "a.b.c"
    with pytest.raises(EvidenceError):
        AttestResponse.from_json({"token": None})


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "version",
                    "tee",
                    "extra-params",
                    "nonce",
                    "kty",
                    "crv",
                    "alg",
                    "x",
                    "runtime-data",
                    "tee-evidence",
                    "init-data",
                    "tee-pubkey",
                    "type",
                ]
            )
            | st.text(max_size=6),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)

_PARSERS = (
    Request.from_json,
    Challenge.from_json,
    Attestation.from_json,
    TeePubKey.from_json,
    ErrorInformation.from_json,
    AttestResponse.from_json,
)


@settings(max_examples=150, deadline=None)
@given(value=_json, which=st.integers(0, len(_PARSERS) - 1))
def test_from_json_random_input_raises_only_evidence_error(value: Any, which: int) -> None:
    try:
        _PARSERS[which](value)
    except EvidenceError:
        pass


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_attestation_mutated_members_raise_only_evidence_error(data: st.DataObject) -> None:
    body = _attestation_json()
    section = data.draw(st.sampled_from(sorted(body)))
    inner = body[section]
    if isinstance(inner, dict) and inner:
        key = data.draw(st.sampled_from(sorted(inner)))
        inner = {**inner, key: data.draw(_json)}
        body[section] = inner
    else:
        body[section] = data.draw(_json)
    try:
        Attestation.from_json(body)
    except EvidenceError:
        pass


_b64ish = st.one_of(
    st.binary(max_size=80).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    st.text(max_size=20),
    st.integers(),
)


@settings(max_examples=150, deadline=None)
@given(
    kty=st.sampled_from(["EC", "RSA", "AKP", "oct", None]),
    crv=st.sampled_from(["P-256", "P-384", "P-521", "X25519", None]),
    members=st.dictionaries(st.sampled_from(["alg", "x", "y", "n", "e", "pub"]), _b64ish),
)
def test_tee_pubkey_random_members_raise_only_evidence_error(
    kty: str | None, crv: str | None, members: dict[str, Any]
) -> None:
    jwk: dict[str, Any] = {**members, "kty": kty, "crv": crv}
    try:
        key = TeePubKey.from_json(jwk)
    except EvidenceError:
        return
    assert TeePubKey.from_json(key.to_json()) == key
