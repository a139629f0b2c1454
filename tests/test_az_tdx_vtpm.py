"""az-tdx-vtpm: the real Azure TDX CVM evidence (v0, report_data "challenge"), v1/v2 shapes,
upstream claims, bindings and byte flips.

Intel does not publish (in the vectors) TCB info for this quote's FMSPC 00806F050000, so the
full pipeline runs with a FABRICATED TCB info for that FMSPC, signed by an emulated TCB signer
(trusted via ``extra_roots_der``); the TPM, HCL, PCK-chain, QE and quote checks are all real.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_tdx_verifier import Fixed, emulated_tcb_chain, resign
from trustpod.errors import EvidenceError, TrustpodError, VerificationError
from trustpod.evidence.az import AzEvidence
from trustpod.evidence.hcl import HclReport
from trustpod.evidence.tdx import parse_td_quote
from trustpod.evidence.tpm import TpmsAttest
from trustpod.initdata import pcr8_after_extend
from trustpod.verifiers.az_tdx_vtpm import AzTdxVtpmVerifier, create
from trustpod.verifiers.base import VerifierSettings, VerifyInput
from trustpod.verifiers.intel_collateral import IntelCollateral
from trustpod.verifiers.intel_dcap import DcapOptions

NOW = dt.datetime(2025, 11, 1, tzinfo=dt.UTC)
CHALLENGE = VerifyInput(b"challenge", None, NOW)


@pytest.fixture(scope="module")
def v0(verifier_data: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((verifier_data / "az-tdx-vtpm/evidence-v0.json").read_text())
    return doc


@pytest.fixture(scope="module")
def verifier(verifier_data: Path) -> AzTdxVtpmVerifier:
    key, chain, root = emulated_tcb_chain()
    doc = json.loads((verifier_data / "tcbInfo.json").read_text())
    body = doc["tcbInfo"]
    body["fmspc"] = "00806F050000"
    for comp in body["tcbLevels"][1]["tcb"]["sgxtcbcomponents"]:
        comp["svn"] = 0
    body["tcbLevels"][1]["tcb"]["pcesvn"] = 0
    fabricated = json.dumps({"tcbInfo": body, "signature": "00" * 64}, separators=(",", ":"))
    qe = (verifier_data / "enclaveIdentity.json").read_bytes()
    col = IntelCollateral.from_parts(
        tcb_info=resign(fabricated.encode(), "tcbInfo", key),
        qe_identity=resign(qe, "enclaveIdentity", key),
        tcb_info_issuer_chain=chain,
        qe_identity_issuer_chain=chain,
    )
    return AzTdxVtpmVerifier(
        Fixed(col), DcapOptions(extra_roots_der=(root,), insecure_skip_crl=True)
    )


def to_v1(v0: dict[str, Any], version: int = 1) -> dict[str, Any]:
    tq = v0["tpm_quote"]
    b64u = base64.urlsafe_b64encode
    return {
        "version": version,
        "tpm_quote": {
            "signature": bytes(tq["signature"]).hex(),
            "message": bytes(tq["message"]).hex(),
            "pcrs": [bytes(p).hex() for p in tq["pcrs"]],
        },
        "hcl_report": b64u(bytes(v0["hcl_report"])).decode().rstrip("="),
        "td_quote": b64u(bytes(v0["td_quote"])).decode().rstrip("="),
    }


def test_v0_parses_with_expected_values(v0: dict[str, Any]) -> None:
    ev = AzEvidence.from_json(v0, tee="az-tdx-vtpm")
    assert ev.version == 0 and ev.td_quote is not None
    assert TpmsAttest.from_bytes(ev.tpm_quote.message).extra_data == b"challenge"
    pcr0 = ev.tpm_quote.pcrs[0].hex()
    assert pcr0.startswith("782b20b1") and pcr0.endswith("a273")  # §6
    hcl = HclReport.from_bytes(ev.hcl_report)
    td_report_data = hcl.td_report()[0x80:0xC0]  # REPORTMACSTRUCT.report_data
    assert hashlib.sha256(hcl.var_data).digest() == td_report_data[:32]
    assert parse_td_quote(ev.td_quote).body.report_data == td_report_data


def test_v0_verifies_with_upstream_claims(v0: dict[str, Any], verifier: AzTdxVtpmVerifier) -> None:
    [out] = verifier.verify(v0, CHALLENGE)
    c = out.claims
    assert c["report_data"] == "6368616c6c656e6765"
    assert c["tpm"]["pcr00"].startswith("782b20b1") and len(c["tpm"]) == 24
    assert c["init_data"] == c["tpm"]["pcr08"]
    assert c["quote"]["header"]["tee_type"] == "81000000"
    assert set(c["td_attributes"]) == {
        "debug", "septve_disable", "protection_keys", "key_locker", "perfmon"
    }  # fmt: skip
    assert c["tcb_status"] == "OutOfDate" and c["collateral_expiration_status"] == "0"
    assert "uefi_event_logs" not in c


@pytest.mark.parametrize("version", [1, 2])
def test_v1_v2_shapes(v0: dict[str, Any], verifier: AzTdxVtpmVerifier, version: int) -> None:
    ev = to_v1(v0, version)
    if version == 1:
        assert verifier.verify(ev, CHALLENGE)[0].claims["report_data"] == "6368616c6c656e6765"
    else:  # the vector's HCL user-data is zeros, so the v2 prefix rule refuses it
        with pytest.raises(VerificationError) as exc:
            verifier.verify(ev, CHALLENGE)
        assert exc.value.reason == "vtpm.user_data"


def test_wrong_report_data(v0: dict[str, Any], verifier: AzTdxVtpmVerifier) -> None:
    for rd in (b"challengf", b"challenge\x00", b""):
        with pytest.raises(VerificationError) as exc:
            verifier.verify(v0, VerifyInput(rd, None, NOW))
        assert exc.value.reason == "vtpm.nonce"


def test_init_data_binding(v0: dict[str, Any], verifier: AzTdxVtpmVerifier) -> None:
    with pytest.raises(VerificationError) as exc:
        verifier.verify(v0, VerifyInput(b"challenge", bytes(32), NOW))
    assert exc.value.reason == "vtpm.init_data"
    with pytest.raises(VerificationError) as exc:
        verifier.verify(v0, VerifyInput(b"challenge", bytes(48), NOW))
    assert exc.value.reason == "initdata.pcr8_digest_size"
    assert pcr8_after_extend(bytes(32)) != bytes(v0["tpm_quote"]["pcrs"][8])


def test_expired_collateral_today(v0: dict[str, Any], verifier: AzTdxVtpmVerifier) -> None:
    with pytest.raises(VerificationError) as exc:
        verifier.verify(
            v0, VerifyInput(b"challenge", None, dt.datetime(2026, 11, 23, tzinfo=dt.UTC))
        )
    assert exc.value.reason == "tdx.collateral_expired"


def test_no_collateral_configured(v0: dict[str, Any]) -> None:
    with pytest.raises(VerificationError) as exc:
        create(VerifierSettings()).verify(v0, CHALLENGE)
    assert exc.value.reason == "tdx.collateral_missing"


def _flip(v0: dict[str, Any], field: str, pos: int, sub: str | None = None) -> dict[str, Any]:
    ev = copy.deepcopy(v0)
    target = ev["tpm_quote"] if sub else ev
    key = sub or field
    if key == "pcrs":
        target["pcrs"][pos // 32][pos % 32] ^= 1
    else:
        target[key][pos] ^= 1
    return ev


def test_flipped_bytes_rejected_with_step(v0: dict[str, Any], verifier: AzTdxVtpmVerifier) -> None:
    rng = random.Random(5)
    hcl = bytes(v0["hcl_report"])
    var_size = int.from_bytes(hcl[0x4D0:0x4D4], "little")
    hcl_allowed = {
        "vtpm.var_data_hash",
        "hcl.var_data",
        "hcl.ak_missing",
        "hcl.ak_invalid",
        "vtpm.quote_signature",
        "encoding.base64url",
        "vtpm.ak_key",
    }
    cases: list[tuple[str, str | None, range, set[str]]] = [
        ("tpm_quote", "message", range(122), {"vtpm.quote_signature"}),
        ("tpm_quote", "signature", range(256), {"vtpm.quote_signature"}),
        ("tpm_quote", "pcrs", range(24 * 32), {"vtpm.pcr_digest"}),
        ("hcl_report", None, range(0x4D4, 0x4D4 + var_size), hcl_allowed),
        ("td_quote", None, range(632), {"tdx.quote_signature", "tdx.quote_malformed",
                                           "vtpm.var_data_hash"}),
    ]  # fmt: skip
    count = 0
    for field, sub, positions, allowed in cases:
        for pos in rng.sample(list(positions), 25):
            ev = _flip(v0, field, pos, sub)
            try:
                verifier.verify(ev, CHALLENGE)
            except TrustpodError as exc:
                assert exc.reason in allowed, (field, sub, pos, exc.reason)
                count += 1
                continue
            pytest.fail(f"flip of {field}/{sub} at {pos} accepted")
    assert count == 125


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {},
        {"version": 3},
        {"version": True, "tpm_quote": {"pcrs": []}},
        {"tpm_quote": {"pcrs": [[0] * 32] * 24, "signature": "x", "message": []}},
        {"version": 1, "tpm_quote": {"pcrs": ["zz"] * 24}},
    ],
)
def test_malformed_evidence(verifier: AzTdxVtpmVerifier, bad: object) -> None:
    with pytest.raises(EvidenceError):
        verifier.verify(bad, CHALLENGE)


@settings(max_examples=100, deadline=None)
@given(pos=st.integers(0, 2599), val=st.integers(0, 255))
def test_hcl_mutations_raise_only_typed_errors(
    v0: dict[str, Any], verifier: AzTdxVtpmVerifier, pos: int, val: int
) -> None:
    ev = copy.deepcopy(v0)
    ev["hcl_report"][pos] = val
    try:
        verifier.verify(ev, CHALLENGE)
    except TrustpodError:
        pass
