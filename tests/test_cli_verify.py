"""``trustpod verify`` and ``trustpod collateral`` through the real CLI entry point."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_collateral_amd import FakeKds, kds  # noqa: F401  (fixture)
from test_snp_support import EmulatedAmd
from trustpod.cli.main import main


@pytest.fixture()
def store(tmp_path: Path, trustee_vectors: Path, verifier_data: Path) -> Iterator[Path]:
    pem = trustee_vectors / "deps/verifier/src/snp/milan_ask_ark_asvk.pem"
    rc = main(
        [
            "collateral",
            "import",
            "--dir",
            str(tmp_path),
            str(pem),
            str(verifier_data / "snp/test-vcek.der"),
        ]
    )
    assert rc == 0
    yield tmp_path


def test_verify_az_snp_v1_prints_claims(
    store: Path, verifier_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ev = verifier_data / "az-snp-vtpm/evidence-v1.json"
    capsys.readouterr()
    rc = main(
        [
            "verify",
            "--tee",
            "az-snp-vtpm",
            "--evidence",
            str(ev),
            "--report-data-text",
            "challenge",
            "--collateral",
            str(store),
        ]
    )
    claims = json.loads(capsys.readouterr().out)
    assert rc == 0 and claims["report_data"] == "6368616c6c656e6765"
    assert claims["tpm"]["pcr00"].startswith("e15c4479")


def test_verify_failure_names_the_check(
    store: Path, verifier_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ev = verifier_data / "az-snp-vtpm/evidence-v1.json"
    rc = main(
        [
            "verify",
            "--tee",
            "az-snp-vtpm",
            "--evidence",
            str(ev),
            "--report-data-text",
            "other",
            "--collateral",
            str(store),
        ]
    )
    assert rc == 1 and "[vtpm.nonce]" in capsys.readouterr().err


def test_verify_raw_snp_report_and_clock(
    store: Path, verifier_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = verifier_data / "snp/test-report.bin"
    rd = raw.read_bytes()[0x50:0x90].hex()
    capsys.readouterr()
    assert (
        main(
            [
                "verify",
                "--tee",
                "snp",
                "--evidence",
                str(raw),
                "--report-data",
                rd,
                "--collateral",
                str(store),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["reported_tcb_microcode"] == 115
    late = ["--now", "2031-01-01T00:00:00Z"]
    rc = main(
        [
            "verify",
            "--tee",
            "snp",
            "--evidence",
            str(raw),
            "--report-data",
            rd,
            "--collateral",
            str(store),
            *late,
        ]
    )
    assert rc == 1 and "[snp.cert_validity]" in capsys.readouterr().err
    rc = main(["verify", "--tee", "snp", "--evidence", str(raw), "--report-data", rd])
    assert rc == 3 and "snp.collateral_missing" in capsys.readouterr().err


def test_verify_emulated_root_only_when_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    amd = EmulatedAmd.create()
    report = amd.report(report_data=b"z" * 64)
    ev = tmp_path / "ev.json"
    ev.write_text(
        json.dumps(
            {
                "attestation_report": report.to_sev_json(),
                "cert_chain": [{"cert_type": "VCEK", "data": list(amd.der("vcek"))}],
            }
        )
    )
    roots = tmp_path / "roots.pem"
    roots.write_bytes(amd.ark.public_bytes(Encoding.PEM) + amd.ask.public_bytes(Encoding.PEM))
    args = [
        "verify",
        "--tee",
        "snp",
        "--evidence",
        str(ev),
        "--report-data-text",
        "z" * 64,
        "--now",
        "2025-06-01",
    ]
    # only AMD's shipped roots: the emulated VCEK is not signed by AMD's ASK
    assert main(args) == 1
    assert "[snp.vek_signature]" in capsys.readouterr().err
    assert main([*args, "--insecure-emulated-root", str(roots)]) == 0
    assert json.loads(capsys.readouterr().out)["report_data"] == "7a" * 64


def test_import_refuses_unpinned_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    amd = EmulatedAmd.create()
    pem = tmp_path / "ark.pem"
    pem.write_bytes(amd.ark.public_bytes(Encoding.PEM))
    assert main(["collateral", "import", "--dir", str(tmp_path / "store"), str(pem)]) == 1
    assert "collateral.root_not_pinned" in capsys.readouterr().err


def test_fetch_amd_from_fake_kds(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    verifier_data: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server: FakeKds = request.getfixturevalue("kds")
    server.throttle = 0
    hwid = (verifier_data / "snp/test-report.bin").read_bytes()[0x1A0:0x1E0].hex()
    args = [
        "collateral",
        "fetch",
        "amd",
        "--product",
        "Milan",
        "--hwid",
        hwid,
        "--tcb",
        "bl=3,tee=0,snp=8,ucode=115",
    ]
    assert main([*args, "--dir", str(tmp_path), "--kds-url", server.url]) == 0
    assert (tmp_path / "vcek" / hwid / "bl03_tee00_snp08_ucode115_vcek.der").exists()
    assert (tmp_path / "amd/Milan/ark.der").exists()
    assert (
        main(
            [
                "collateral",
                "fetch",
                "amd",
                "--product",
                "Milan",
                "--tcb",
                "bad",
                "--dir",
                str(tmp_path),
            ]
        )
        == 2
    )


def test_import_intel_collateral(
    tmp_path: Path, verifier_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["collateral", "import", "intel", "--dir", str(tmp_path)]
    files = [
        "--tcb-info",
        str(verifier_data / "tcbInfo.json"),
        "--qe-identity",
        str(verifier_data / "enclaveIdentity.json"),
    ]
    assert main([*args, *files]) == 0
    assert (tmp_path / "intel/tdx/tcbinfo-00A06D080000.json").exists()
    assert main(args) == 2  # the Intel files are required
    assert main(["collateral", "import", "--dir", str(tmp_path)]) == 2  # nothing to import
