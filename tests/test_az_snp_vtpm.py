"""az-snp-vtpm verifier: upstream vectors v1/v2 with expected claims, every quote byte flipped,
HCL tampering, initdata PCR8, emulated evidence built with our builders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from test_snp_support import NOW, EmulatedAmd, az_snp_evidence, load_amd_ca
from trustpod.errors import DependencyError, EvidenceError, VerificationError
from trustpod.evidence.az import AzEvidence
from trustpod.initdata import pcr8_after_extend
from trustpod.verifiers.az_snp_vtpm import AzSnpVtpmVerifier
from trustpod.verifiers.base import VerifyInput
from trustpod.verifiers.snp import SnpVerifier

V2_REPORT_DATA = bytes.fromhex(
    "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9a"
    "a398f647caa2338748cd0fd9f5f819ef"
)
V2_PCR0 = "84275b2f4312cd4fc6cbe6b152ad3c3683e513d9f1e23c34fca160c8cca7a6a7"
V1_PCR0 = "e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced"


@pytest.fixture(scope="module")
def verifier(trustee_vectors: Path) -> AzSnpVtpmVerifier:
    return AzSnpVtpmVerifier(SnpVerifier(root_sources=[load_amd_ca(trustee_vectors)]))


def _load(verifier_data: Path, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads((verifier_data / "az-snp-vtpm" / name).read_text())
    return obj


def test_v1_vector(verifier: AzSnpVtpmVerifier, verifier_data: Path) -> None:
    [out] = verifier.verify(
        _load(verifier_data, "evidence-v1.json"), VerifyInput(b"challenge", None, NOW)
    )
    c = out.claims
    assert c["report_data"] == "6368616c6c656e6765"
    assert c["tpm"]["pcr00"] == V1_PCR0 and len(c["tpm"]) == 24
    assert c["init_data"] == c["tpm"]["pcr08"]
    assert c["reported_tcb_bootloader"] == "4" and c["policy_smt_allowed"] == "true"
    assert c["platform_tsme_enabled"] == "false"
    assert "chip_id" not in c and len(c["measurement"]) == 64  # base64 of 48 bytes


def test_v2_vector(verifier: AzSnpVtpmVerifier, verifier_data: Path) -> None:
    ev = _load(verifier_data, "evidence-v2.json")
    [out] = verifier.verify(ev, VerifyInput(V2_REPORT_DATA, None, NOW))
    assert out.claims["report_data"] == V2_REPORT_DATA.hex()
    assert out.claims["tpm"]["pcr00"] == V2_PCR0
    with pytest.raises(VerificationError) as err:
        verifier.verify(ev, VerifyInput(V2_REPORT_DATA[:-1] + b"\0", None, NOW))
    assert err.value.reason == "vtpm.nonce"
    # initdata: PCR8 of this VM is 0, so any digest is refused; a 48-byte one with a clear error
    with pytest.raises(VerificationError) as err:
        verifier.verify(ev, VerifyInput(V2_REPORT_DATA, b"\x11" * 32, NOW))
    assert err.value.reason == "vtpm.init_data"
    with pytest.raises(VerificationError) as err:
        verifier.verify(ev, VerifyInput(V2_REPORT_DATA, b"\x11" * 48, NOW))
    assert err.value.reason == "initdata.pcr8_digest_size"


def test_every_quote_message_byte_flip(verifier: AzSnpVtpmVerifier, verifier_data: Path) -> None:
    ev = _load(verifier_data, "evidence-v1.json")
    message = bytes.fromhex(ev["tpm_quote"]["message"])
    for i in range(len(message)):
        bad = bytearray(message)
        bad[i] ^= 0x01
        tampered = dict(ev, tpm_quote=dict(ev["tpm_quote"], message=bad.hex()))
        with pytest.raises(VerificationError) as err:
            verifier.verify(tampered, VerifyInput(b"challenge", None, NOW))
        assert err.value.reason == "vtpm.quote_signature"


def test_pcr_and_hcl_tampering(verifier: AzSnpVtpmVerifier, verifier_data: Path) -> None:
    ev = _load(verifier_data, "evidence-v1.json")
    pcrs = list(ev["tpm_quote"]["pcrs"])
    pcrs[3] = "00" * 32
    with pytest.raises(VerificationError) as err:
        verifier.verify(
            dict(ev, tpm_quote=dict(ev["tpm_quote"], pcrs=pcrs)),
            VerifyInput(b"challenge", None, NOW),
        )
    assert err.value.reason == "vtpm.pcr_digest"
    hcl = bytearray(AzEvidence.from_json(ev).hcl_report)
    import base64

    for offset, reason in [(0x6E0, "vtpm.var_data_hash"), (0x1A6, "snp.signature")]:
        bad = bytearray(hcl)
        bad[offset] ^= 0x01
        tampered = dict(ev, hcl_report=base64.urlsafe_b64encode(bytes(bad)).decode())
        with pytest.raises(VerificationError) as err:
            verifier.verify(tampered, VerifyInput(b"challenge", None, NOW))
        assert err.value.reason == reason


@pytest.fixture(scope="module")
def emulated() -> tuple[EmulatedAmd, rsa.RSAPrivateKey]:
    return EmulatedAmd.create(), rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_emulated_evidence_round_trip(
    emulated: tuple[EmulatedAmd, rsa.RSAPrivateKey], verifier: AzSnpVtpmVerifier
) -> None:
    amd, ak = emulated
    digest = hashlib.sha256(b"initdata").digest()
    pcrs = [bytes(32)] * 24
    pcrs[8] = pcr8_after_extend(digest)
    rd = hashlib.sha384(b"runtime").digest()
    ev = az_snp_evidence(amd, rd, ak=ak, pcrs=pcrs)
    v = AzSnpVtpmVerifier(SnpVerifier(insecure_emulated_roots=amd.roots()))
    [out] = v.verify(ev, VerifyInput(rd, digest, NOW))
    assert out.claims["init_data"] == pcrs[8].hex() and out.claims["report_data"] == rd.hex()
    # a verifier trusting only AMD's roots refuses it: the VCEK is not signed by AMD's ASK
    with pytest.raises(VerificationError) as err:
        verifier.verify(ev, VerifyInput(rd, digest, NOW))
    assert err.value.reason == "snp.vek_signature"
    # and without any AMD certificates it says what is missing
    with pytest.raises(DependencyError) as dep:
        AzSnpVtpmVerifier(SnpVerifier()).verify(ev, VerifyInput(rd, digest, NOW))
    assert dep.value.reason == "snp.collateral_missing"
    # v2 user-data must start with the report_data
    bad = az_snp_evidence(amd, rd, ak=ak, pcrs=pcrs, user_data=b"other")
    with pytest.raises(VerificationError) as err:
        v.verify(bad, VerifyInput(rd, digest, NOW))
    assert err.value.reason == "vtpm.user_data"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.text(max_size=6),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(json_values, st.sampled_from(["az-snp-vtpm", "az-tdx-vtpm"]))
def test_az_evidence_parser_typed_errors(value: Any, tee: str) -> None:
    try:
        AzEvidence.from_json(value, tee=tee)
    except EvidenceError:
        pass


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["version", "tpm_quote", "hcl_report", "vcek"]), json_values)
def test_az_verifier_mutations_typed_errors(
    verifier: AzSnpVtpmVerifier, verifier_data: Path, key: str, value: Any
) -> None:
    ev = dict(_load(verifier_data, "evidence-v1.json"), **{key: value})
    with pytest.raises((EvidenceError, VerificationError)):
        verifier.verify(ev, VerifyInput(b"challenge", None, NOW))


def test_v0_format_from_v1_vector(verifier: AzSnpVtpmVerifier, verifier_data: Path) -> None:
    """Format v0 (byte arrays + PEM VCEK, no version) carries the same bytes as v1."""
    import base64
    import textwrap

    ev = AzEvidence.from_json(_load(verifier_data, "evidence-v1.json"))
    assert ev.vcek is not None
    body = "\n".join(textwrap.wrap(base64.b64encode(ev.vcek).decode(), 64))
    pem = f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"
    v0 = {
        "quote": {
            "signature": list(ev.tpm_quote.signature),
            "message": list(ev.tpm_quote.message),
            "pcrs": [list(p) for p in ev.tpm_quote.pcrs],
        },
        "report": list(ev.hcl_report),
        "vcek": pem,
    }
    assert AzEvidence.from_json(v0).version == 0
    [out] = verifier.verify(v0, VerifyInput(b"challenge", None, NOW))
    assert out.claims["report_data"] == "6368616c6c656e6765"
    assert out.claims["tpm"]["pcr00"] == V1_PCR0
    with pytest.raises(EvidenceError):
        AzEvidence.to_json(AzEvidence.from_json(v0))
