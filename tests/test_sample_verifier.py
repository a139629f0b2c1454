"""trustpod.verifiers.sample: exact report_data binding, upstream claims, init_data echo."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod._internal.b64 import b64_encode
from trustpod._internal.jcs import jcs_digest
from trustpod.collateral.wiring import build_verifiers
from trustpod.errors import EvidenceError, VerificationError
from trustpod.guest.attesters.sample import SampleAttester
from trustpod.verifiers.base import VerifierSettings, VerifyInput
from trustpod.verifiers.sample import SampleVerifier, create

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
RUNTIME = {"nonce": "n", "tee-pubkey": {"kty": "EC"}, "additional-evidence": ""}
REPORT = jcs_digest(RUNTIME)


def verifier() -> SampleVerifier:
    return create(VerifierSettings())


def test_accepts_attester_evidence_with_upstream_claims() -> None:
    evidence = SampleAttester().get_evidence(REPORT)
    [claims] = verifier().verify(evidence, VerifyInput(REPORT, None, NOW))
    assert claims.tee_class == "cpu"
    assert claims.claims == {
        "svn": "1",
        "report_data": b64_encode(REPORT),
        "launch_digest": "abcde",
        "platform_version": {"major": 1, "minor": 4},
        "debug": False,
    }


def test_init_data_claim_is_base64_of_digest() -> None:
    digest = hashlib.sha384(b"initdata").digest()
    evidence = SampleAttester().get_evidence(REPORT)
    [claims] = verifier().verify(evidence, VerifyInput(REPORT, digest, NOW))
    assert claims.claims["init_data"] == b64_encode(digest)


@pytest.mark.parametrize(
    "report",
    [
        REPORT[:-1],  # truncated
        REPORT + b"\0" * 16,  # zero-padded to 64: sample is exact, not padded (§1.5)
        bytes([REPORT[0] ^ 1]) + REPORT[1:],  # one bit flipped
        b"",
    ],
)
def test_report_data_must_match_exactly(report: bytes) -> None:
    evidence = {"svn": "1", "report_data": b64_encode(report)}
    with pytest.raises(VerificationError) as exc:
        verifier().verify(evidence, VerifyInput(REPORT, None, NOW))
    assert exc.value.reason == "sample.report_data"


def test_missing_report_data_defaults_to_empty_and_fails() -> None:
    with pytest.raises(VerificationError):
        verifier().verify({"svn": "1"}, VerifyInput(REPORT, None, NOW))


@pytest.mark.parametrize(
    "evidence",
    [None, [], "x", {}, {"svn": 1, "report_data": ""}, {"svn": "1", "report_data": 5}],
)
def test_malformed_evidence(evidence: Any) -> None:
    with pytest.raises(EvidenceError) as exc:
        verifier().verify(evidence, VerifyInput(REPORT, None, NOW))
    assert exc.value.reason == "sample.malformed"


def test_bad_base64_is_evidence_error() -> None:
    with pytest.raises(EvidenceError):
        verifier().verify({"svn": "1", "report_data": "!!"}, VerifyInput(REPORT, None, NOW))


def test_size_limit() -> None:
    v = create(VerifierSettings(max_evidence_bytes=10))
    with pytest.raises(EvidenceError) as exc:
        v.verify({"svn": "1", "report_data": b64_encode(REPORT)}, VerifyInput(REPORT, None, NOW))
    assert exc.value.reason == "sample.too_large"


def test_registry_builds_sample() -> None:
    registry = build_verifiers(tees=("sample",))
    assert registry.tees == ("sample",)
    evidence = SampleAttester().get_evidence(REPORT)
    assert registry.verify("sample", evidence, VerifyInput(REPORT, None, NOW))


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.dictionaries(st.sampled_from(["svn", "report_data", "x"]), st.text(max_size=80)),
        st.dictionaries(st.text(max_size=5), st.integers() | st.none() | st.text(max_size=5)),
        st.lists(st.integers(), max_size=3),
        st.text(max_size=20),
    )
)
def test_random_evidence_raises_only_typed_errors(evidence: Any) -> None:
    try:
        verifier().verify(evidence, VerifyInput(REPORT, None, NOW))
    except (EvidenceError, VerificationError):
        pass
    else:  # pragma: no cover - a random 48-byte match is impossible
        raise AssertionError("random evidence verified")
