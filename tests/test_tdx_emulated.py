"""Complete DCAP path on an emulated Intel hierarchy (tests/tdx_emulator.py): CRLs, revocation,
TCB statuses, and dcap-qvl's agreeing second opinion. The TD report body is a real one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tdx_emulator import Emulated, emulate
from test_tdx_verifier import Fixed, evidence, expected_for
from trustpod.errors import VerificationError
from trustpod.verifiers import intel_dcap
from trustpod.verifiers.intel_collateral import IntelCollateral
from trustpod.verifiers.intel_dcap import DcapOptions
from trustpod.verifiers.tdx import TdxVerifier

NOW = dt.datetime(2025, 11, 1, tzinfo=dt.UTC)


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

    def spy(*args: object) -> tuple[str, list[str]]:
        status, adv = real(*args)  # type: ignore[arg-type]
        calls.append(status)
        return status, adv

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
