"""Foundation helpers: strict base64, JCS digest (upstream vector), clocks, error tree."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod._internal.b64 import b64_decode, b64_encode, b64url_decode, b64url_encode
from trustpod._internal.clock import FixedClock
from trustpod._internal.jcs import canonical_json, jcs_digest
from trustpod.errors import EvidenceError, TrustpodError, VerificationError


def test_jcs_vector_from_upstream() -> None:
    # attestation-service/src/lib.rs test vector (PROVENANCE.md).
    digest = jcs_digest({"b": 1, "a": "test", "c": {"d": "e"}}, "sha384")
    assert digest.hex() == (
        "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c"
        "4597480a186427c813ca941da78870c3"
    )
    assert canonical_json({"b": 1, "a": "test"}) == b'{"a":"test","b":1}'


def test_jcs_rejects_unknown_hash() -> None:
    with pytest.raises(EvidenceError) as err:
        jcs_digest({}, "md5")
    assert err.value.reason == "encoding.hash_alg"


@given(st.binary(max_size=200))
@settings(max_examples=100, deadline=None)
def test_b64_round_trips(data: bytes) -> None:
    assert b64_decode(b64_encode(data)) == data
    assert b64url_decode(b64url_encode(data)) == data
    assert b64url_decode(base64.urlsafe_b64encode(data).decode()) == data  # padded accepted


@pytest.mark.parametrize("bad", ["@@@@", "YQ", "YQ=", "a b=", "é"])
def test_b64_std_rejects(bad: str) -> None:
    with pytest.raises(EvidenceError):
        b64_decode(bad, field="nonce")


@pytest.mark.parametrize("bad", ["a", "YQ+", "YQ/", "YQ===", "é", "Y Q"])
def test_b64url_rejects(bad: str) -> None:
    with pytest.raises(EvidenceError):
        b64url_decode(bad)


@given(st.text(max_size=50))
@settings(max_examples=200, deadline=None)
def test_b64_decoders_raise_only_typed_errors(text: str) -> None:
    for fn in (b64_decode, b64url_decode):
        try:
            fn(text)
        except EvidenceError:
            pass


def test_fixed_clock() -> None:
    clock = FixedClock(1000.0)
    assert clock.time() == 1000.0
    clock.advance(5)
    assert clock.now().timestamp() == 1005.0
    assert clock.now().tzinfo is not None


def test_error_diagnostics_carry_reason_and_fix() -> None:
    err = VerificationError("bad sig", reason="snp.signature", fix="check the VCEK")
    assert isinstance(err, TrustpodError)
    text = err.diagnostics()
    assert "snp.signature" in text and "check the VCEK" in text
    assert EvidenceError("x").reason == "evidence.malformed"
