"""CLI messages a new user meets: unknown names list what exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustpod.cli.main import main


def test_verify_unknown_tee_names_the_tees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ev = tmp_path / "ev.json"
    ev.write_text("{}")
    rc = main(["verify", "--tee", "sev-snp", "--evidence", str(ev), "--report-data-text", "x"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown TEE 'sev-snp'" in err and "[verifier.unknown_tee]" in err
    for tee in ("az-snp-vtpm", "az-tdx-vtpm", "sample", "snp", "tdx", "tpm"):
        assert tee in err
    assert "no verifiers configured" not in err
