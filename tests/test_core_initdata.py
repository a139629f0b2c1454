"""trustpod.initdata: validation, digest over raw bytes, claims, binding helpers, annotation."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.errors import EvidenceError, VerificationError
from trustpod.initdata import (
    InitData,
    decode_annotation,
    encode_annotation,
    extract_policy_data,
    fit,
    pcr8_after_extend,
)

DOC = '''algorithm = "sha384"
version = "0.1.0"

[data]
"aa.toml" = """
[token_configs.kbs]
url = "https://kbs.example:8080"
"""
"cdh.toml" = """
socket = 'unix:///run/confidential-containers/cdh.sock'
credentials = []
[kbc]
name = 'cc_kbc'
url = 'https://kbs.example:8080'
"""
"policy.rego" = """
package agent_policy
default AllowRequestsFailingPolicy := false
policy_data := {
  "containers": [{"OCI": {"Annotations": {"io.kubernetes.cri.image-name": "busybox"}}}]
}
"""
'''


def test_digest_is_over_raw_bytes() -> None:
    doc = InitData.parse(DOC)
    assert doc.algorithm == "sha384"
    assert doc.digest == hashlib.sha384(DOC.encode()).digest()
    # Re-serialisation changes the digest: a trailing newline is a different document.
    assert InitData.parse(DOC + "\n").digest != doc.digest


def test_claims_parse_tomls_and_replace_policy() -> None:
    claims = InitData.parse(DOC).claims()
    assert claims["aa.toml"]["token_configs"]["kbs"]["url"] == "https://kbs.example:8080"
    assert claims["cdh.toml"]["kbc"]["name"] == "cc_kbc"
    assert "policy.rego" not in claims
    image = claims["agent_policy_claims"]["containers"][0]["OCI"]["Annotations"]
    assert image["io.kubernetes.cri.image-name"] == "busybox"


def test_policy_without_policy_data_gives_none() -> None:
    assert extract_policy_data("package x\nallow := true\n") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('algorithm = "sha256"\nversion = "0.2.0"\n', "initdata.version"),
        ('algorithm = "md5"\nversion = "0.1.0"\n', "initdata.algorithm"),
        ('algorithm = "sm3"\nversion = "0.1.0"\n', "initdata.algorithm"),
        ('algorithm = "sha256"\nversion = "0.1.0"\n[data]\nx = 1\n', "initdata.data"),
        ('algorithm = "sha256"\nversion = "0.1.0"\nextra = 1\n', "initdata.unknown_key"),
        ("not toml ===", "initdata.toml"),
    ],
)
def test_invalid_documents_are_named(text: str, reason: str) -> None:
    with pytest.raises(EvidenceError) as err:
        InitData.parse(text)
    assert err.value.reason == reason


def test_size_limit() -> None:
    with pytest.raises(EvidenceError) as err:
        InitData.parse("#" * 100, max_bytes=10)
    assert err.value.reason == "initdata.too_large"


def test_pcr8_vector_from_upstream() -> None:
    digest = bytes.fromhex("8505e4e25e50a27c5dc8147af88efbece627fbea55291911eff832d9ee127781")
    assert pcr8_after_extend(digest).hex() == (
        "bddaccb9c52249e97a31baea61b7d91be8221a16e703d92148d04fb8e9c1dfdd"
    )


def test_pcr8_refuses_long_digest_with_fix() -> None:
    with pytest.raises(VerificationError) as err:
        pcr8_after_extend(b"\1" * 48)
    assert err.value.fix and "sha256" in err.value.fix


def test_fit_pads_and_truncates() -> None:
    assert fit(b"\1\2", 4) == b"\1\2\0\0"
    assert fit(b"\1\2\3\4\5", 4) == b"\1\2\3\4"


def test_annotation_round_trip_and_errors() -> None:
    raw = DOC.encode()
    assert decode_annotation(encode_annotation(raw)) == raw
    assert encode_annotation(raw) == encode_annotation(raw)  # deterministic
    with pytest.raises(EvidenceError):
        decode_annotation("not base64!")
    with pytest.raises(EvidenceError):
        decode_annotation(encode_annotation(b"x" * 1000), max_bytes=10)


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_parse_raises_only_typed_errors(raw: bytes) -> None:
    try:
        InitData.parse(raw)
    except EvidenceError:
        pass
