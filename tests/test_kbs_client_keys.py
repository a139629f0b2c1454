"""TEE key pair and the sample attester (guest side of the KBS protocol)."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from trustpod.errors import ConfigError, EvidenceError, VerificationError
from trustpod.guest.attesters import Attester, SampleAttester, UnsupportedAttesterFeature
from trustpod.guest.tee_key import TeeKeyPair
from trustpod.protocol import TeePubKey, encrypt_response, runtime_data_digest


def test_default_key_is_p256_ecdh_es() -> None:
    pair = TeeKeyPair.generate_ec()
    jwk = pair.public_jwk()
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256" and jwk["alg"] == "ECDH-ES+A256KW"
    assert TeePubKey.from_json(jwk) == pair.tee_pubkey
    assert pair.decrypt(encrypt_response(b"hello", jwk)) == b"hello"


@pytest.mark.parametrize("bits", [2048, 3072])
def test_rsa_key(bits: int) -> None:
    pair = TeeKeyPair.generate_rsa(bits)
    jwk = pair.public_jwk()
    assert jwk["alg"] == "RSA-OAEP-256"
    assert len(base64.urlsafe_b64decode(jwk["n"] + "==")) == bits // 8
    assert pair.decrypt(encrypt_response(b"x" * 100, jwk)) == b"x" * 100


def test_p521_and_bad_parameters() -> None:
    pair = TeeKeyPair.generate_ec("P-521")
    assert pair.decrypt(encrypt_response(b"y", pair.public_jwk())) == b"y"
    with pytest.raises(ConfigError):
        TeeKeyPair.generate_ec("P-192")
    with pytest.raises(ConfigError):
        TeeKeyPair.generate_rsa(1024)
    with pytest.raises(ConfigError):
        TeeKeyPair(ec.generate_private_key(ec.SECP384R1()))


def test_decrypt_with_other_key_fails() -> None:
    jwe = encrypt_response(b"z", TeeKeyPair.generate_ec().public_jwk())
    with pytest.raises(VerificationError):
        TeeKeyPair.generate_ec().decrypt(jwe)


@pytest.mark.parametrize("factory", [TeeKeyPair.generate_ec, TeeKeyPair.generate_rsa])
def test_pem_roundtrip(tmp_path: Path, factory: object) -> None:
    pair = factory()  # type: ignore[operator]
    path = tmp_path / "tee.pem"
    pair.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = TeeKeyPair.load(path)
    assert loaded.public_jwk() == pair.public_jwk()
    header = path.read_bytes().splitlines()[0]
    rsa = pair.public_jwk()["kty"] == "RSA"
    assert header == (b"-----BEGIN RSA PRIVATE KEY-----" if rsa else b"-----BEGIN PRIVATE KEY-----")


def test_bad_pem(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError):
        TeeKeyPair.from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError):
        TeeKeyPair.load(tmp_path / "missing.pem")


def test_sample_attester_evidence_shape() -> None:
    attester = SampleAttester()
    assert isinstance(attester, Attester)
    digest = runtime_data_digest("bm9uY2U=", TeeKeyPair.generate_ec().public_jwk())
    evidence = attester.get_evidence(digest)
    assert evidence == {"svn": "1", "report_data": base64.b64encode(digest).decode()}
    attester.bind_init_data(b"\0" * 48)  # no-op, as upstream's sample
    with pytest.raises(UnsupportedAttesterFeature) as info:
        attester.extend_runtime_measurement(b"\0" * 32, 17)
    assert info.value.reason == "attester.unsupported"
