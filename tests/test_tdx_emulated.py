"""Complete DCAP path on an emulated Intel hierarchy (tests/tdx_emulator.py): CRLs, revocation,
TCB statuses, and dcap-qvl's agreeing second opinion. The TD report body is a real one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tdx_emulator import Emulated, emulate
from test_tdx_verifier import Fixed, evidence, expected_for
from trustpod.errors import VerificationError
from trustpod.evidence.tdx import parse_td_quote
from trustpod.verifiers import intel_dcap
from trustpod.verifiers.intel_collateral import IntelCollateral
from trustpod.verifiers.intel_dcap import DcapOptions
from trustpod.verifiers.intel_qvl import qvl_status
from trustpod.verifiers.tdx import TdxVerifier

NOW = dt.datetime(2025, 11, 1, tzinfo=dt.UTC)
BASE = (2, 2, 2, 2, 4, 1, 0, 2)  # SGX components of the vector TCB info's levels


def make(verifier_data: Path, **kw: object) -> Emulated:
    return emulate(
        (verifier_data / "tdx_quote_6.dat").read_bytes(),
        (verifier_data / "tcbInfo.json").read_bytes(),
        (verifier_data / "enclaveIdentity.json").read_bytes(),
        **kw,  # type: ignore[arg-type]
    )


def collateral(e: Emulated) -> IntelCollateral:
    return IntelCollateral.from_parts(
        tcb_info=e.tcb_info,
        qe_identity=e.qe_identity,
        tcb_info_issuer_chain=e.tcb_chain,
        qe_identity_issuer_chain=e.tcb_chain,
        pck_crl=e.pck_crl,
        root_ca_crl=e.root_ca_crl,
    )


def run(e: Emulated, now: dt.datetime = NOW, **opts: object) -> dict[str, object]:
    options = DcapOptions(extra_roots_der=(e.root_der,), **opts)  # type: ignore[arg-type]
    [out] = TdxVerifier(Fixed(collateral(e)), options).verify(
        evidence(e.quote), expected_for(e.quote, now)
    )
    return out.claims


@pytest.fixture
def qvl_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = intel_dcap.qvl_status

    def spy(*args: object) -> tuple[str, list[str]] | None:
        result = real(*args)  # type: ignore[arg-type]
        calls.append(result[0] if result else "n/a")
        return result

    monkeypatch.setattr(intel_dcap, "qvl_status", spy)
    return calls


@pytest.mark.parametrize(("pce_svn", "status"), [(11, "OutOfDate"), (13, "UpToDate")])
def test_complete_collateral_and_dcap_qvl_agree(
    verifier_data: Path, qvl_calls: list[str], pce_svn: int, status: str
) -> None:
    claims = run(make(verifier_data, pce_svn=pce_svn))
    assert claims["tcb_status"] == status
    assert claims["pck_crl_num"] == 3 and claims["root_ca_crl_num"] == 3
    assert claims["collateral_expiration_status"] == "0"
    assert qvl_calls == [status]


def test_no_qvl_on_partial_collateral(verifier_data: Path, qvl_calls: list[str]) -> None:
    run(make(verifier_data), insecure_skip_crl=True)
    assert qvl_calls == []


def test_revoked_pck(verifier_data: Path) -> None:
    with pytest.raises(VerificationError) as exc:
        run(make(verifier_data, revoke_pck=True))
    assert exc.value.reason == "tdx.revoked"


def test_expired_crl(verifier_data: Path) -> None:
    with pytest.raises(VerificationError) as exc:
        run(make(verifier_data), now=dt.datetime(2026, 1, 5, tzinfo=dt.UTC))
    assert exc.value.reason == "tdx.crl_expired"


def test_unsupported_platform_tcb(verifier_data: Path) -> None:
    with pytest.raises(VerificationError) as exc:
        run(make(verifier_data, comps=(0,) * 16, pce_svn=0))
    assert exc.value.reason == "tdx.tcb_level"


def test_qvl_disagreement_is_fatal(verifier_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intel_dcap, "qvl_status", lambda *a: ("UpToDate", []))
    with pytest.raises(VerificationError) as exc:
        run(make(verifier_data))
    assert exc.value.reason == "tdx.qvl_disagrees"


def test_crl_from_wrong_issuer(verifier_data: Path) -> None:
    a, b = make(verifier_data), make(verifier_data)
    a.pck_crl = b.pck_crl
    with pytest.raises(VerificationError) as exc:
        run(a)
    assert exc.value.reason == "tdx.crl_signature"


@settings(max_examples=120, deadline=None)
@given(
    comps=st.lists(st.sampled_from([0, 0, 0, 0, 0, 0, 1, 2, -1]), min_size=8, max_size=8),
    pce_svn=st.integers(4, 15),
    svn=st.tuples(st.integers(2, 6), st.sampled_from([0, 1, 3, 5]), st.integers(1, 4)),
    v5=st.booleans(),
)
def test_differential_against_dcap_qvl(
    verifier_data: Path, comps: list[int], pce_svn: int, svn: tuple[int, int, int], v5: bool
) -> None:
    """Random platform TCBs: trustpod and dcap-qvl agree on the status, or both refuse."""
    e = emulate(
        (verifier_data / ("tdx_quote_5.dat" if v5 else "tdx_quote_6.dat")).read_bytes(),
        (verifier_data / "tcbInfo.json").read_bytes(),
        (verifier_data / "enclaveIdentity.json").read_bytes(),
        comps=tuple(max(0, b + d) for b, d in zip(BASE, comps, strict=True)) + (0,) * 8,
        pce_svn=pce_svn,
        tee_tcb_svn=bytes(svn) + bytes(13),
        zero_service_td=True,
    )
    try:
        claims = run(e)  # raises tdx.qvl_disagrees when dcap-qvl's status differs
    except VerificationError as exc:
        event(exc.reason)
        assert exc.reason in {"tdx.tcb_level", "tdx.tdx_module", "tdx.tdx_module_tcb_level"}
        with pytest.raises(VerificationError):
            qvl_status(parse_td_quote(e.quote), collateral(e), e.root_der, NOW)
        return
    event(str(claims["tcb_status"]))
    assert qvl_status(parse_td_quote(e.quote), collateral(e), e.root_der, NOW) == (
        claims["tcb_status"],
        [],
    )


def test_qvl_policy_only_objection_is_not_applicable(verifier_data: Path) -> None:
    """dcap-qvl refuses a non-zero MR_SERVICETD by policy; upstream accepts it: no veto."""
    e = make_v5(verifier_data)
    assert qvl_status(parse_td_quote(e.quote), collateral(e), e.root_der, NOW) is None
    assert run(e)["tcb_status"] == "UpToDate"


def make_v5(verifier_data: Path) -> Emulated:
    return emulate(
        (verifier_data / "tdx_quote_5.dat").read_bytes(),
        (verifier_data / "tcbInfo.json").read_bytes(),
        (verifier_data / "enclaveIdentity.json").read_bytes(),
        pce_svn=13,
        tee_tcb_svn=bytes([5, 3, 2]) + bytes(13),
    )


GRID = [
    (v5, launch, current, pce)
    for v5 in (False, True)
    for launch in ((2, 1, 2), (4, 1, 2), (5, 0, 2), (4, 0, 2), (3, 3, 2), (5, 3, 1), (6, 1, 3))
    for current in ((5, 1, 2), (3, 3, 3), (2, 1, 2))
    for pce in (5, 13)
    if v5 or current == (5, 1, 2)
]


@pytest.mark.parametrize(("v5", "launch", "current", "pce"), GRID)
def test_tdx_svn_grid_against_dcap_qvl(
    verifier_data: Path,
    v5: bool,
    launch: tuple[int, int, int],
    current: tuple[int, int, int],
    pce: int,
) -> None:
    """Module identities, TDX components and the TDX 1.5 relaunch rule agree with dcap-qvl."""
    e = emulate(
        (verifier_data / ("tdx_quote_5.dat" if v5 else "tdx_quote_6.dat")).read_bytes(),
        (verifier_data / "tcbInfo.json").read_bytes(),
        (verifier_data / "enclaveIdentity.json").read_bytes(),
        comps=BASE + (0,) * 8,
        pce_svn=pce,
        tee_tcb_svn=bytes(launch) + bytes(13),
        tee_tcb_svn2=bytes(current) + bytes(13),
        zero_service_td=True,
    )
    qvl: tuple[str, list[str]] | str | None
    try:
        qvl = qvl_status(parse_td_quote(e.quote), collateral(e), e.root_der, NOW)
    except VerificationError:
        qvl = "rejected"
    try:
        ours: str = str(run(e)["tcb_status"])
    except VerificationError as exc:
        assert exc.reason in {"tdx.tcb_level", "tdx.tdx_module", "tdx.tdx_module_tcb_level"}
        ours = "rejected"
    assert (qvl if isinstance(qvl, str) else qvl and qvl[0]) == ours


def test_supplemental_claims_match_dcap_qvl_claims(verifier_data: Path) -> None:
    """Our QVL-style supplemental claims equal dcap-qvl's own claims on the same collateral."""
    import json

    import dcap_qvl

    e = make(verifier_data)
    col = collateral(e)
    qvl_col = dcap_qvl.QuoteCollateralV3(
        e.pck_crl_chain.decode(), e.root_ca_crl, e.pck_crl,
        e.tcb_chain.decode(), col.tcb_info.signed_bytes.decode(), col.tcb_info.signature,
        e.tcb_chain.decode(), col.qe_identity.signed_bytes.decode(), col.qe_identity.signature,
    )  # fmt: skip
    now = int(NOW.timestamp())
    theirs = json.loads(
        dcap_qvl.QuoteVerifier(e.root_der)
        .verify_with_policy(e.quote, qvl_col, now, dcap_qvl.QuotePolicy.claims_only(now))
        .to_json()
    )
    ours = run(e)

    def ts(value: int) -> str:
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    assert ours["earliest_issue_date"] == ts(theirs["earliest_issue_date"])
    assert ours["latest_issue_date"] == ts(theirs["latest_issue_date"])
    assert ours["earliest_expiration_date"] == ts(theirs["earliest_expiration_date"])
    assert ours["tcb_date"] == ts(theirs["platform"]["tcb_date_tag"])
    assert ours["tcb_status"] == theirs["tcb"]["status"]
    assert ours["advisory_ids"] == theirs["tcb"]["advisory_ids"]
    assert ours["tcb_eval_num"] == theirs["tcb"]["eval_data_number"]
    assert ours["pck_crl_num"] == theirs["platform"]["pck_crl_num"]
    assert ours["root_ca_crl_num"] == theirs["platform"]["root_ca_crl_num"]
    assert ours["root_key_id"] == bytes(theirs["platform"]["root_key_id"]).hex()
    assert ours["platform_provider_id"] == bytes(theirs["platform"]["pck"]["ppid"]).hex()


def test_revoked_intermediate_ca(verifier_data: Path) -> None:
    with pytest.raises(VerificationError) as exc:
        run(make(verifier_data, revoke_ca=True))
    assert exc.value.reason == "tdx.revoked"


def test_processor_ca_platform(verifier_data: Path) -> None:
    e = make(verifier_data, ca_kind="Processor")
    source = Fixed(collateral(e))
    options = DcapOptions(extra_roots_der=(e.root_der,))
    [out] = TdxVerifier(source, options).verify(evidence(e.quote), expected_for(e.quote, NOW))
    assert source.calls == [("00a06d080000", "processor")]
    assert out.claims["tcb_status"] == "OutOfDate"
    assert "platform_instance_id" not in out.claims
