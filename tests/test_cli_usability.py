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


def test_reference_value_checks_on_the_default_policy() -> None:
    from trustpod.attestation.defaults import default_policy
    from trustpod.attestation.rv_explain import (
        failed_reference_values,
        reference_value_checks,
    )

    text = default_policy("default_cpu")
    doc = {
        "sample": {
            "launch_digest": "xyz",
            "svn": "1",
            "platform_version": {"major": 1, "minor": 2},
            "debug": False,
        }
    }
    refs = {"launch_digest": ["abcde"], "svn": ["1"], "major_version": 1}
    checks = reference_value_checks(text, doc, refs)
    by_name = {c["reference_value"]: c for c in checks}
    assert set(by_name) == {"launch_digest", "svn", "major_version", "minimum_minor_version"}
    assert by_name["launch_digest"]["rule"] == "executables"
    assert not by_name["launch_digest"]["ok"] and by_name["svn"]["ok"]
    assert not by_name["minimum_minor_version"]["ok"]  # not registered
    lines = failed_reference_values(checks)
    assert any("executables: reference value 'launch_digest'" in ln for ln in lines)
    assert any("'minimum_minor_version'" in ln and "no reference value" in ln for ln in lines)
    # another TEE's rules are not reported; a policy without such checks gives none
    assert all(c["claim"].startswith("sample.") for c in checks)
    assert reference_value_checks("package policy\n", doc, refs) == []


def test_admin_explain_names_the_reference_value(tmp_path: Path) -> None:
    import re

    from test_kbs_cli_flow import Running, _port, _serve, _wait, tp

    d = tmp_path / "kbs"
    listen = f"127.0.0.1:{_port()}"
    tp("kbs", "init", "--dir", str(d), "--listen", listen)
    proc = _serve(d / "kbs-config.toml")
    try:
        kbs = Running(d, f"https://{listen}")
        _wait(kbs.url, kbs.cert)
        secret = tmp_path / "s"
        secret.write_bytes(b"x")
        kbs.admin("set-resource", "--path", "default/key/1", "--resource-file", str(secret))
        kbs.admin("set-resource-policy", "--affirming")
        kbs.admin("set-reference-value", "launch_digest", "not-the-sample-digest")
        kbs.admin("set-reference-value", "svn", "1")
        kbs.admin("set-reference-value", "major_version", "1", "--as-integer", "--as-single-value")
        r = tp(
            "client", "--url", kbs.url, "--cert-file", kbs.cert,
            "get-resource", "--path", "default/key/1", check=False,
        )  # fmt: skip
        assert r.returncode == 1, r.stderr
        m = re.search(r"request id ([0-9a-f]{32})", r.stderr)
        assert m, r.stderr
        ex = kbs.admin("explain", m.group(1))
        assert '"status": 403' in ex.stdout or '"status":403' in ex.stdout
        err = ex.stderr
        assert "executables: reference value 'launch_digest'" in err, err
        assert "not-the-sample-digest" in err
        assert "'minimum_minor_version'" in err and "no reference value registered" in err
        assert "contraindicated" in err or "warning" in err
    finally:
        proc.terminate()
        proc.wait(20)


def test_build_verifiers_unknown_tee_lists_the_known_ones() -> None:
    from trustpod.collateral.wiring import build_verifiers
    from trustpod.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        build_verifiers(tees=("sev",))
    assert err.value.reason == "verifier.unknown_tee"
    assert "az-snp-vtpm" in err.value.message and "'sev'" in err.value.message
    assert build_verifiers(tees=("sample",)).tees == ("sample",)
