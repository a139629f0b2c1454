"""``trustpod verify --tee tdx`` through the CLI on the real tdx_quote_6 vector and its collateral.

The vectors lack the TCB-signing chain and the CRLs, so the two named insecure options are needed
(ADR 0500); the collateral expired in November 2025, so the clock decides the outcome.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from trustpod.cli.main import main
from trustpod.evidence.tdx import parse_td_quote

INSECURE = [
    "--verifier-option",
    "tdx.insecure_skip_crl=true",
    "--verifier-option",
    "tdx.insecure_unsigned_collateral=true",
]


@pytest.fixture()
def tdx_setup(verifier_data: Path, tmp_path: Path) -> tuple[Path, Path, str]:
    quote = (verifier_data / "tdx_quote_6.dat").read_bytes()
    evidence = tmp_path / "q6.json"
    evidence.write_text(json.dumps({"quote": base64.b64encode(quote).decode()}))
    store = tmp_path / "collateral"
    rc = main(
        [
            "collateral",
            "import",
            "--dir",
            str(store),
            "--tcb-info",
            str(verifier_data / "tcbInfo.json"),
            "--qe-identity",
            str(verifier_data / "enclaveIdentity.json"),
            "intel",
        ]
    )
    assert rc == 0
    return evidence, store, parse_td_quote(quote).body.report_data.hex()


def _verify(evidence: Path, store: Path, rd: str, now: str) -> list[str]:
    return [
        "verify",
        "--tee",
        "tdx",
        "--evidence",
        str(evidence),
        "--report-data",
        rd,
        "--collateral",
        str(store),
        "--now",
        now,
        *INSECURE,
    ]


def test_verifies_inside_collateral_window(
    tdx_setup: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    evidence, store, rd = tdx_setup
    assert main(_verify(evidence, store, rd, "2025-11-01T00:00:00Z")) == 0
    claims = json.loads(capsys.readouterr().out)
    assert claims["tcb_status"] == "OutOfDate"
    assert claims["collateral_expiration_status"] == "0"
    assert claims["quote"]["header"]["version"] == "0400"


def test_refused_with_todays_clock(
    tdx_setup: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    evidence, store, rd = tdx_setup
    assert main(_verify(evidence, store, rd, "2026-11-23T00:00:00Z")) == 1
    assert "tdx.collateral_expired" in capsys.readouterr().err


def test_wrong_report_data_names_the_check(
    tdx_setup: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    evidence, store, _ = tdx_setup
    assert main(_verify(evidence, store, "00" * 64, "2025-11-01T00:00:00Z")) == 1
    assert "tdx.report_data" in capsys.readouterr().err


def test_bad_verifier_option_is_a_usage_error(
    tdx_setup: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    evidence, store, rd = tdx_setup
    args = [*_verify(evidence, store, rd, "2025-11-01T00:00:00Z"), "--verifier-option", "nodot"]
    assert main(args) == 2
    assert "TEE.KEY=VALUE" in capsys.readouterr().err
