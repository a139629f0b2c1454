"""TDX DCAP quote parsing: every real vector with expected values, upstream's golden claims."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from tdx_emulator import sgx_extension
from trustpod.errors import EvidenceError
from trustpod.evidence.intel_pck import SGX_EXTENSION_OID, parse_pck_extensions
from trustpod.evidence.tdx import parse_td_quote
from trustpod.verifiers.intel_dcap import INTEL_SGX_ROOT_CA_SHA256
from trustpod.verifiers.tdx import tdx_quote_claims

# (file, version, body_type, FMSPC, mr_td prefix, tcb_svn, debug)  - PROVENANCE.md / §6
QUOTES = [
    ("tdx_quote_4.dat", 4, None, "50806f000000", "705ee9381b8633a9", "03000500", True),
    ("tdx_quote_5.dat", 5, 3, "90c06f000000", "dfba221b48a22af8", "05010200", False),
    ("tdx_quote_6.dat", 4, None, "00a06d080000", "21e8dead92d6c69d", "05030200", False),
    ("az-tdx-vtpm/td-quote.bin", 4, None, "00806f050000", "024a32b070383331", "02010600", False),
]


@pytest.mark.parametrize(("name", "version", "body_type", "fmspc", "mr_td", "svn", "debug"), QUOTES)
def test_vectors_parse(
    verifier_data: Path,
    name: str,
    version: int,
    body_type: int | None,
    fmspc: str,
    mr_td: str,
    svn: str,
    debug: bool,
) -> None:
    q = parse_td_quote((verifier_data / name).read_bytes())
    assert q.version == version and q.body_type == body_type
    assert q.header.tee_type == 0x81 and q.header.att_key_type == 2
    assert q.sig.pck.fmspc.hex() == fmspc
    assert q.body.mr_td.hex().startswith(mr_td)
    assert q.body.tcb_svn.hex().startswith(svn)
    assert tdx_quote_claims(q)["td_attributes"]["debug"] is debug
    assert (q.body.tee_tcb_svn2 is not None) is (body_type == 3)
    assert q.sig.pck.ca == "platform" and len(q.sig.pck_chain) == 3
    root = x509.load_der_x509_certificate(q.sig.pck_chain[-1])
    assert "Intel SGX Root CA" in root.subject.rfc4514_string()
    assert hashlib.sha256(root.public_bytes(Encoding.DER)).hexdigest() == INTEL_SGX_ROOT_CA_SHA256


def test_quote6_mrconfigid(verifier_data: Path) -> None:
    q = parse_td_quote((verifier_data / "tdx_quote_6.dat").read_bytes())
    assert q.body.mr_config_id.hex().startswith("889abf47")
    assert tdx_quote_claims(q)["init_data"] == q.body.mr_config_id.hex()


def test_golden_claims_quote4(verifier_data: Path) -> None:
    """Upstream's parse_tdx_claims_expected.json (minus the event log: CCEL_data not vendored)."""
    golden = json.loads((verifier_data / "parse_tdx_claims_expected.json").read_text())
    golden.pop("uefi_event_logs")
    claims = tdx_quote_claims(parse_td_quote((verifier_data / "tdx_quote_4.dat").read_bytes()))
    assert claims == golden


def test_v5_claims_have_type_and_size(verifier_data: Path) -> None:
    c = tdx_quote_claims(parse_td_quote((verifier_data / "tdx_quote_5.dat").read_bytes()))
    assert c["quote"]["header"]["version"] == "0500"
    assert c["quote"]["type"] == "0300" and c["quote"]["size"] == "88020000"
    assert len(c["quote"]["body"]["tee_tcb_svn2"]) == 32
    assert len(c["quote"]["body"]["mr_servicetd"]) == 96


@pytest.mark.parametrize(
    ("offset", "value", "what"),
    [(0, 3, "version"), (4, 0x00, "tee_type"), (2, 3, "attestation key"), (48, 9, "body type")],
)
def test_header_fields_rejected(verifier_data: Path, offset: int, value: int, what: str) -> None:
    name = "tdx_quote_5.dat" if what == "body type" else "tdx_quote_4.dat"
    raw = bytearray((verifier_data / name).read_bytes())
    raw[offset] = value
    with pytest.raises(EvidenceError) as exc:
        parse_td_quote(bytes(raw))
    assert exc.value.reason == "tdx.quote_malformed"


def test_every_truncation_rejected(verifier_data: Path) -> None:
    raw = (verifier_data / "tdx_quote_4.dat").read_bytes()
    for cut in list(range(0, 700, 7)) + list(range(700, len(raw) - 1, 97)):
        with pytest.raises(EvidenceError):
            parse_td_quote(raw[:cut])


def test_size_limit() -> None:
    with pytest.raises(EvidenceError):
        parse_td_quote(b"\x04\x00" + bytes(70_000))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=6000))
def test_random_bytes_raise_only_typed_errors(data: bytes) -> None:
    try:
        parse_td_quote(data)
    except EvidenceError:
        pass


@pytest.fixture(scope="module")
def quote4(verifier_data: Path) -> bytes:
    return (verifier_data / "tdx_quote_4.dat").read_bytes()


@settings(max_examples=150, deadline=None)
@given(pos=st.integers(min_value=0, max_value=4935), val=st.integers(0, 255), cut=st.booleans())
def test_mutated_quote_raises_only_typed_errors(
    quote4: bytes, pos: int, val: int, cut: bool
) -> None:
    raw = bytearray(quote4)
    raw[pos] = val
    try:
        parse_td_quote(bytes(raw[:pos]) if cut else bytes(raw))
    except EvidenceError:
        pass


_KEY = ec.generate_private_key(ec.SECP256R1())


def _pck_with(ext: bytes) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test SGX PCK Platform CA")])
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_KEY.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), ext), False
        )
        .sign(_KEY, hashes.SHA256())
    )


def test_emulated_sgx_extension_round_trip() -> None:
    comps = tuple(range(1, 17))
    ext = sgx_extension(comps, 11, bytes.fromhex("00a06d080000"), sgx_type=1)
    pck = parse_pck_extensions(_pck_with(ext))
    assert pck.tcb_components == comps and pck.pce_svn == 11 and pck.sgx_type == 1
    assert pck.fmspc.hex() == "00a06d080000" and pck.ca == "platform"
    assert pck.platform_instance_id is None and pck.dynamic_platform is None


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_sgx_extension_fuzz_raises_only_typed_errors(data: st.DataObject) -> None:
    good = bytearray(sgx_extension((2,) * 16, 11, b"\x00" * 6))
    choice = data.draw(st.sampled_from(["random", "flip", "cut"]))
    if choice == "random":
        ext = data.draw(st.binary(max_size=200))
    elif choice == "flip":
        pos = data.draw(st.integers(0, len(good) - 1))
        good[pos] = data.draw(st.integers(0, 255))
        ext = bytes(good)
    else:
        ext = bytes(good[: data.draw(st.integers(0, len(good) - 1))])
    try:
        parse_pck_extensions(_pck_with(ext))
    except EvidenceError:
        pass
