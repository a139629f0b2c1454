"""TPM structures and the generic ``tpm`` verifier: vectors, built quotes for every signature
scheme, every quote byte flipped, hypothesis on the parsers."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from test_snp_support import NOW
from trustpod.errors import EvidenceError, VerificationError
from trustpod.evidence.tpm import (
    ALG_ECDSA,
    ALG_RSAPSS,
    ALG_RSASSA,
    ALG_SHA256,
    PcrSelection,
    TpmsAttest,
    TpmtSignature,
    pcr_digest,
    public_key_from_tpm2b_public,
)
from trustpod.initdata import pcr8_after_extend
from trustpod.verifiers.az_common import verify_quote_signature
from trustpod.verifiers.base import VerifyInput
from trustpod.verifiers.tpm import TpmVerifier

PCRS = [hashlib.sha256(bytes([i])).digest() for i in range(24)]


def _attest(nonce: bytes, pcrs: list[bytes]) -> TpmsAttest:
    return TpmsAttest(
        qualified_signer=b"\x00\x0b" + bytes(32),
        extra_data=nonce,
        clock=5,
        reset_count=1,
        restart_count=0,
        safe=True,
        firmware_version=0x2000,
        pcr_select=(PcrSelection(ALG_SHA256, b"\xff\xff\xff"),),
        pcr_digest=pcr_digest(pcrs),
    )


def _evidence(key: Any, scheme: int, nonce: bytes, pcrs: list[bytes]) -> dict[str, Any]:
    message = _attest(nonce, pcrs).to_bytes()
    if scheme == ALG_ECDSA:
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
        sig = TpmtSignature(
            ALG_ECDSA, ALG_SHA256, ecdsa_r=r.to_bytes(32, "big"), ecdsa_s=s.to_bytes(32, "big")
        )
    elif scheme == ALG_RSAPSS:
        raw = key.sign(message, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        sig = TpmtSignature(ALG_RSAPSS, ALG_SHA256, signature=raw)
    else:
        sig = TpmtSignature(
            ALG_RSASSA, ALG_SHA256, signature=key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "ak_public": base64.b64encode(spki).decode(),
        "tpm_quote": {
            "message": base64.b64encode(message).decode(),
            "signature": base64.b64encode(sig.to_bytes()).decode(),
            "pcrs": [p.hex() for p in pcrs],
        },
    }


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_vector_structures(verifier_data: Path) -> None:
    ev = json.loads((verifier_data / "tpm_evidence.json").read_text())
    message = base64.b64decode(ev["tpm_quote"]["message"])
    attest = TpmsAttest.from_bytes(message)
    assert attest.to_bytes() == message
    assert attest.pcr_select[0].pcrs == tuple(range(24))
    sig = TpmtSignature.from_bytes(base64.b64decode(ev["tpm_quote"]["signature"]))
    assert (sig.sig_alg, sig.hash_alg, len(sig.signature)) == (ALG_RSASSA, ALG_SHA256, 256)
    assert pcr_digest([bytes.fromhex(p) for p in ev["tpm_quote"]["pcrs"]]) == attest.pcr_digest
    az_msg = (verifier_data / "az-snp-vtpm/tpm-quote.msg").read_bytes()
    az = TpmsAttest.from_bytes(az_msg)
    assert az.extra_data == b"challenge" and az.to_bytes() == az_msg


def test_vector_signature_and_nonce_rule(verifier_data: Path) -> None:
    """The swtpm vector's AK signature and PCR digest verify; its nonce is 64 bytes, so upstream's
    rule (expected resized to 32) can never match it: the verifier refuses with vtpm.nonce."""
    ev = json.loads((verifier_data / "tpm_evidence.json").read_text())
    message = base64.b64decode(ev["tpm_quote"]["message"])
    nonce = TpmsAttest.from_bytes(message).extra_data
    with pytest.raises(VerificationError) as err:
        TpmVerifier().verify(ev, VerifyInput(nonce, None, NOW))
    assert err.value.reason == "vtpm.nonce"
    key = serialization.load_der_public_key(base64.b64decode(ev["ak_public"]))
    assert isinstance(key, rsa.RSAPublicKey)
    verify_quote_signature(
        message, TpmtSignature.from_bytes(base64.b64decode(ev["tpm_quote"]["signature"])), key
    )


@pytest.mark.parametrize("scheme", [ALG_RSASSA, ALG_RSAPSS, ALG_ECDSA])
def test_built_quotes_verify(rsa_key: rsa.RSAPrivateKey, scheme: int) -> None:
    key: Any = ec.generate_private_key(ec.SECP256R1()) if scheme == ALG_ECDSA else rsa_key
    digest = hashlib.sha256(b"initdata").digest()
    pcrs = list(PCRS)
    pcrs[8] = pcr8_after_extend(digest)
    expected = hashlib.sha384(b"runtime").digest()
    ev = _evidence(key, scheme, expected[:32], pcrs)
    [out] = TpmVerifier().verify(ev, VerifyInput(expected, digest, NOW))
    c = out.claims
    assert c["report_data"] == expected[:32].hex() and c["init_data"] == pcrs[8].hex()
    assert c["ak_public"] == ev["ak_public"] and c["pcr23"] == PCRS[23].hex()
    with pytest.raises(VerificationError) as err:
        TpmVerifier().verify(ev, VerifyInput(expected, hashlib.sha256(b"x").digest(), NOW))
    assert err.value.reason == "vtpm.init_data"


def test_every_quote_byte_flip(rsa_key: rsa.RSAPrivateKey) -> None:
    ev = _evidence(rsa_key, ALG_RSASSA, b"n" * 32, PCRS)
    message = base64.b64decode(ev["tpm_quote"]["message"])
    for i in range(len(message)):
        bad = bytearray(message)
        bad[i] ^= 0x80
        tampered = dict(ev, tpm_quote=dict(ev["tpm_quote"], message=base64.b64encode(bad).decode()))
        with pytest.raises(VerificationError) as err:
            TpmVerifier().verify(tampered, VerifyInput(b"n" * 32, None, NOW))
        assert err.value.reason == "vtpm.quote_signature"


def test_tpm2b_public_rsa_and_ecc(rsa_key: rsa.RSAPrivateKey) -> None:
    n = rsa_key.public_key().public_numbers().n.to_bytes(256, "big")
    body = (
        b"\x00\x01\x00\x0b" + b"\x00\x05\x00\x72" + b"\x00\x00" + b"\x00\x10" + b"\x00\x14\x00\x0b"
    )
    body += b"\x08\x00" + b"\x00\x00\x00\x00" + len(n).to_bytes(2, "big") + n
    key = public_key_from_tpm2b_public(len(body).to_bytes(2, "big") + body)
    assert (
        isinstance(key, rsa.RSAPublicKey)
        and key.public_numbers() == rsa_key.public_key().public_numbers()
    )
    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    body = (
        b"\x00\x23\x00\x0b\x00\x05\x00\x72\x00\x00"
        + b"\x00\x10"
        + b"\x00\x18\x00\x0b"
        + b"\x00\x03"
    )
    body += (
        b"\x00\x10"
        + b"\x00\x20"
        + pub.x.to_bytes(32, "big")
        + b"\x00\x20"
        + pub.y.to_bytes(32, "big")
    )
    eck = public_key_from_tpm2b_public(len(body).to_bytes(2, "big") + body)
    assert isinstance(eck, ec.EllipticCurvePublicKey) and eck.public_numbers() == pub


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_parsers_raise_only_typed_errors(data: bytes) -> None:
    for parse in (TpmsAttest.from_bytes, TpmtSignature.from_bytes, public_key_from_tpm2b_public):
        try:
            parse(data)
        except EvidenceError:
            pass


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 120))
def test_truncated_quote_is_typed_error(cut: int) -> None:
    message = _attest(b"n" * 32, PCRS).to_bytes()
    with pytest.raises(EvidenceError):
        TpmsAttest.from_bytes(message[:cut])


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["ak_public", "tpm_quote", "x"]), st.text(max_size=8) | st.none()
    )
)
def test_tpm_evidence_garbage(value: dict[str, Any]) -> None:
    with pytest.raises(EvidenceError):
        TpmVerifier().verify(value, VerifyInput(b"", None, NOW))
