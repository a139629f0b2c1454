"""The tdx verifier on real quotes: DCAP steps, collateral window, bindings, byte flips.

The vectors carry tcbInfo.json / enclaveIdentity.json without their issuer chain and no CRLs,
so the real-collateral path runs with the named ``insecure_`` options (warned). The signature
path over the same real JSON bodies is exercised with an EMULATED TCB-signing chain trusted via
``insecure_emulated_roots`` (the PCK chain still ends at the real, pinned Intel root).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod._internal.clock import FixedClock
from trustpod.collateral.wiring import build_verifiers
from trustpod.collateral.wiring import create_tdx as create
from trustpod.errors import EvidenceError, TrustpodError, VerificationError
from trustpod.evidence.tdx import parse_td_quote
from trustpod.verifiers.base import VerifierSettings, VerifyInput
from trustpod.verifiers.intel_collateral import IntelCollateral, SignedCollateral
from trustpod.verifiers.intel_dcap import DcapOptions
from trustpod.verifiers.tdx import TdxVerifier

IN_WINDOW = FixedClock(dt.datetime(2025, 11, 1, tzinfo=dt.UTC)).now()
TODAY = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)  # after the vectors' nextUpdate (2025-11-26)
INSECURE = DcapOptions(insecure_unsigned_collateral=True, insecure_skip_crl=True)


class Fixed:
    def __init__(self, col: IntelCollateral) -> None:
        self.col = col
        self.calls: list[tuple[str, str]] = []

    def get_tdx(self, fmspc: str, ca: str) -> IntelCollateral:
        self.calls.append((fmspc, ca))
        return self.col


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def emulated_tcb_chain() -> tuple[ec.EllipticCurvePrivateKey, bytes, bytes]:
    """(TCB signing key, chain PEM [signing cert, root], root DER): a test-only look-alike."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    sign_key = ec.generate_private_key(ec.SECP256R1())
    start, end = dt.datetime(2020, 1, 1, tzinfo=dt.UTC), dt.datetime(2040, 1, 1, tzinfo=dt.UTC)

    def cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(_name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .sign(root_key, hashes.SHA256())
        )

    root = cert("Test SGX Root CA", root_key, "Test SGX Root CA")
    signing = cert("Test SGX TCB Signing", sign_key, "Test SGX Root CA")
    pem = signing.public_bytes(Encoding.PEM) + root.public_bytes(Encoding.PEM)
    return sign_key, pem, root.public_bytes(Encoding.DER)


def resign(raw: bytes, key: str, signer: ec.EllipticCurvePrivateKey, tamper: bool = False) -> bytes:
    """Re-sign the exact inner JSON text of a PCS document with ``signer``."""
    inner = SignedCollateral.parse(raw, key).signed_bytes
    r, s = decode_dss_signature(signer.sign(inner, ec.ECDSA(hashes.SHA256())))
    if tamper:  # change the body after signing
        inner = inner.replace(b'"tcbEvaluationDataNumber":17', b'"tcbEvaluationDataNumber":18', 1)
    sig = (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()
    return b'{"' + key.encode() + b'":' + inner + b',"signature":"' + sig.encode() + b'"}'


@pytest.fixture(scope="module")
def files(verifier_data: Path) -> dict[str, bytes]:
    return {
        "tcb": (verifier_data / "tcbInfo.json").read_bytes(),
        "qe": (verifier_data / "enclaveIdentity.json").read_bytes(),
        "q4": (verifier_data / "tdx_quote_4.dat").read_bytes(),
        "q5": (verifier_data / "tdx_quote_5.dat").read_bytes(),
        "q6": (verifier_data / "tdx_quote_6.dat").read_bytes(),
    }


@pytest.fixture(scope="module")
def real_col(files: dict[str, bytes]) -> IntelCollateral:
    return IntelCollateral.from_parts(tcb_info=files["tcb"], qe_identity=files["qe"])


def evidence(quote: bytes, ccel: bytes | None = None) -> dict[str, str | None]:
    enc = base64.b64encode
    return {"quote": enc(quote).decode(), "cc_eventlog": enc(ccel).decode() if ccel else None}


def expected_for(quote: bytes, now: dt.datetime = IN_WINDOW) -> VerifyInput:
    return VerifyInput(parse_td_quote(quote).body.report_data, None, now)


def test_quote6_verifies_inside_window(files: dict[str, bytes], real_col: IntelCollateral) -> None:
    src = Fixed(real_col)
    [out] = TdxVerifier(src, INSECURE).verify(evidence(files["q6"]), expected_for(files["q6"]))
    c = out.claims
    assert src.calls == [("00a06d080000", "platform")]
    assert c["tcb_status"] == "OutOfDate"  # PCESVN 11 < 13 of the UpToDate level
    assert c["collateral_expiration_status"] == "0"
    assert c["tcb_eval_num"] == 17 and c["sgx_type"] == "Scalable with Integrity"
    assert c["is_dynamic_platform"] is True and c["is_cached_keys"] is False
    assert c["root_key_id"].startswith("46e403bd34f05a3f")  # upstream claims.rs test value
    assert c["earliest_expiration_date"] == "2025-11-26T13:07:17Z"
    assert c["init_data"].startswith("889abf47") and c["quote"]["header"]["version"] == "0400"
    assert "uefi_event_logs" not in c


def test_expired_collateral_refused_today(
    files: dict[str, bytes], real_col: IntelCollateral
) -> None:
    with pytest.raises(VerificationError) as exc:
        TdxVerifier(Fixed(real_col), INSECURE).verify(
            evidence(files["q6"]), expected_for(files["q6"], TODAY)
        )
    assert exc.value.reason == "tdx.collateral_expired"


def test_expired_collateral_claim_when_allowed(
    files: dict[str, bytes], real_col: IntelCollateral
) -> None:
    opts = DcapOptions(
        insecure_unsigned_collateral=True, insecure_skip_crl=True, reject_expired_collateral=False
    )
    [out] = TdxVerifier(Fixed(real_col), opts).verify(
        evidence(files["q6"]), expected_for(files["q6"], TODAY)
    )
    assert out.claims["collateral_expiration_status"] == "1"


@pytest.mark.parametrize(
    ("opts", "reason"),
    [
        (DcapOptions(insecure_skip_crl=True), "tdx.tcb_info_issuer_missing"),
        (DcapOptions(insecure_unsigned_collateral=True), "tdx.crl_missing"),
        (DcapOptions(), "tdx.crl_missing"),
    ],
)
def test_missing_collateral_parts_fail_closed(
    files: dict[str, bytes], real_col: IntelCollateral, opts: DcapOptions, reason: str
) -> None:
    with pytest.raises(VerificationError) as exc:
        TdxVerifier(Fixed(real_col), opts).verify(evidence(files["q6"]), expected_for(files["q6"]))
    assert exc.value.reason == reason


@pytest.mark.parametrize("name", ["q4", "q5"])
def test_other_quotes_pass_crypto_then_need_their_own_tcb_info(
    files: dict[str, bytes], real_col: IntelCollateral, name: str
) -> None:
    """Signatures, PCK chain and QE checks pass; the FMSPC-specific TCB info is not vendored."""
    with pytest.raises(VerificationError) as exc:
        TdxVerifier(Fixed(real_col), INSECURE).verify(
            evidence(files[name]), expected_for(files[name])
        )
    assert exc.value.reason == "tdx.tcb_info_mismatch"


def test_signed_collateral_with_emulated_tcb_signer(files: dict[str, bytes]) -> None:
    key, chain, root_der = emulated_tcb_chain()
    col = IntelCollateral.from_parts(
        tcb_info=resign(files["tcb"], "tcbInfo", key),
        qe_identity=resign(files["qe"], "enclaveIdentity", key),
        tcb_info_issuer_chain=chain,
        qe_identity_issuer_chain=chain,
    )
    opts = DcapOptions(extra_roots_der=(root_der,), insecure_skip_crl=True)
    [out] = TdxVerifier(Fixed(col), opts).verify(evidence(files["q6"]), expected_for(files["q6"]))
    assert out.claims["tcb_status"] == "OutOfDate"
    # the emulated root is refused unless configured
    with pytest.raises(VerificationError) as exc:
        TdxVerifier(Fixed(col), DcapOptions(insecure_skip_crl=True)).verify(
            evidence(files["q6"]), expected_for(files["q6"])
        )
    assert exc.value.reason == "tdx.tcb_info_chain"
    # a tampered TCB info body is refused
    bad = IntelCollateral(
        tcb_info=SignedCollateral.parse(
            resign(files["tcb"], "tcbInfo", key, tamper=True), "tcbInfo", chain
        ),
        qe_identity=col.qe_identity,
    )
    with pytest.raises(VerificationError) as exc:
        TdxVerifier(Fixed(bad), opts).verify(evidence(files["q6"]), expected_for(files["q6"]))
    assert exc.value.reason == "tdx.tcb_info_signature"


def test_report_data_and_init_data_bindings(
    files: dict[str, bytes], real_col: IntelCollateral
) -> None:
    v = TdxVerifier(Fixed(real_col), INSECURE)
    q = parse_td_quote(files["q6"])
    with pytest.raises(VerificationError) as exc:
        v.verify(evidence(files["q6"]), VerifyInput(b"challenge", None, IN_WINDOW))
    assert exc.value.reason == "tdx.report_data"
    ok = VerifyInput(q.body.report_data, q.body.mr_config_id, IN_WINDOW)
    assert v.verify(evidence(files["q6"]), ok)
    with pytest.raises(VerificationError) as exc:
        v.verify(evidence(files["q6"]), VerifyInput(q.body.report_data, b"\x01" * 32, IN_WINDOW))
    assert exc.value.reason == "tdx.init_data"


def test_ccel_replay_mismatch_rejected(
    files: dict[str, bytes], real_col: IntelCollateral, verifier_data: Path
) -> None:
    ccel = (verifier_data / "CCEL_data_ovmf").read_bytes()  # not this quote's boot
    with pytest.raises(VerificationError) as exc:
        TdxVerifier(Fixed(real_col), INSECURE).verify(
            evidence(files["q6"], ccel), expected_for(files["q6"])
        )
    assert exc.value.reason == "tdx.ccel_replay"


@pytest.mark.parametrize(
    "bad", [None, [], {"quote": 1}, {"quote": "!!"}, {"quote": ""}, {"quote": "AAAA"}]
)
def test_malformed_evidence(real_col: IntelCollateral, bad: object) -> None:
    with pytest.raises(EvidenceError):
        TdxVerifier(Fixed(real_col), INSECURE).verify(bad, VerifyInput(b"", None, IN_WINDOW))


def test_no_collateral_source_fails_closed(files: dict[str, bytes]) -> None:
    verifier = create(VerifierSettings())
    with pytest.raises(VerificationError) as exc:
        verifier.verify(evidence(files["q6"]), expected_for(files["q6"]))
    assert exc.value.reason == "tdx.collateral_missing"


def test_registry_builds_tdx_with_offline_store(files: dict[str, bytes], tmp_path: Path) -> None:
    from trustpod.collateral.intel import DirectoryIntelStore, IntelItems

    DirectoryIntelStore(tmp_path).save(
        "00A06D080000", "platform", IntelItems(files["tcb"], None, files["qe"], None, None, None)
    )
    settings = VerifierSettings(
        collateral_dir=tmp_path,
        extra={"tdx": {"insecure_unsigned_collateral": True, "insecure_skip_crl": True}},
    )
    reg = build_verifiers(settings, tees=("tdx",))
    [out] = reg.verify("tdx", evidence(files["q6"]), expected_for(files["q6"]))
    assert out.claims["tcb_status"] == "OutOfDate"


def _regions(raw: bytes) -> dict[str, range]:
    """Signed/bound regions of a v4 quote and the step that must name their corruption."""
    sd = 632 + 4
    return {
        "header+body": range(632),
        "quote signature": range(sd, sd + 64),
        "attestation key": range(sd + 64, sd + 128),
        "qe report": range(sd + 134, sd + 134 + 384),
        "qe report signature": range(sd + 518, sd + 582),
        "qe auth data": range(sd + 584, sd + 616),
        "pck chain": range(sd + 622, sd + 622 + 3600),
    }


ALLOWED = {
    "header+body": {"tdx.quote_signature", "tdx.quote_malformed"},
    "quote signature": {"tdx.quote_signature"},
    "attestation key": {"tdx.qe_report_data", "tdx.quote_malformed"},
    "qe report": {"tdx.qe_report_signature"},
    "qe report signature": {"tdx.qe_report_signature"},
    "qe auth data": {"tdx.qe_report_data"},
    "pck chain": {"tdx.pck_chain", "tdx.pck_malformed", "tdx.qe_report_signature"},
}


def test_flipped_signed_bytes_rejected_with_step(
    files: dict[str, bytes], real_col: IntelCollateral
) -> None:
    raw = files["q6"]
    v = TdxVerifier(Fixed(real_col), INSECURE)
    rng = random.Random(6)
    count = 0
    for region, positions in _regions(raw).items():
        picks = rng.sample(list(positions), min(len(positions), 30))
        for pos in picks:
            flipped = bytearray(raw)
            flipped[pos] ^= 0x01
            try:
                v.verify(evidence(bytes(flipped)), expected_for(raw))
            except TrustpodError as exc:
                assert exc.reason in ALLOWED[region], (region, pos, exc.reason)
                count += 1
                continue
            pytest.fail(f"flip at {pos} ({region}) was accepted")
    assert count >= 200


def test_collateral_json_shape(files: dict[str, bytes]) -> None:
    doc = json.loads(files["tcb"])
    assert SignedCollateral.parse(files["tcb"], "tcbInfo").body == doc["tcbInfo"]
    for bad in (b"{}", b"[]", b'{"tcbInfo": {}, "signature": "zz"}', b"\xff"):
        with pytest.raises(EvidenceError):
            SignedCollateral.parse(bad, "tcbInfo")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_tcb_info_fails_closed(files: dict[str, bytes], data: st.DataObject) -> None:
    """Any node of the TCB info / QE identity replaced by random JSON: a typed error or a status."""
    which = data.draw(st.sampled_from(["tcb", "qe"]))
    key = "tcbInfo" if which == "tcb" else "enclaveIdentity"
    doc = json.loads(files[which])
    paths = [p for p in _paths(doc[key]) if p]
    path = data.draw(st.sampled_from(paths))
    node = doc[key]
    for step in path[:-1]:
        node = node[step]  # type: ignore[index]
    node[path[-1]] = data.draw(JSON)  # type: ignore[index]
    mutated = json.dumps(doc).encode()
    parts = {"tcb_info": files["tcb"], "qe_identity": files["qe"]}
    parts["tcb_info" if which == "tcb" else "qe_identity"] = mutated
    try:
        col = IntelCollateral.from_parts(**parts)
        TdxVerifier(Fixed(col), INSECURE).verify(evidence(files["q6"]), expected_for(files["q6"]))
    except TrustpodError:
        pass


def test_unknown_fmspc_in_offline_store(files: dict[str, bytes], tmp_path: Path) -> None:
    verifier = create(VerifierSettings(collateral_dir=tmp_path))
    with pytest.raises(VerificationError) as exc:
        verifier.verify(evidence(files["q4"]), expected_for(files["q4"]))
    assert exc.value.reason == "tdx.collateral_missing"
    assert exc.value.fix is not None and "50806F000000" in exc.value.fix
