"""``trustpod initdata`` CLI: new, digest (upstream PCR 8 vector), annotation round trip."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pytest

from trustpod.cli.initdata import build_initdata
from trustpod.cli.main import main
from trustpod.guest.config import parse_aa, parse_cdh
from trustpod.initdata import InitData, decode_annotation, pcr8_after_extend

# Upstream vector (trustee deps/verifier/src/az_snp_vtpm, PROVENANCE.md).
VECTOR_DIGEST = "8505e4e25e50a27c5dc8147af88efbece627fbea55291911eff832d9ee127781"
VECTOR_PCR8 = "bddaccb9c52249e97a31baea61b7d91be8221a16e703d92148d04fb8e9c1dfdd"

PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def test_pcr8_vector() -> None:
    assert pcr8_after_extend(bytes.fromhex(VECTOR_DIGEST)).hex() == VECTOR_PCR8


@pytest.mark.parametrize("alg", ["sha256", "sha384", "sha512"])
def test_new_is_valid_initdata(
    alg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = tmp_path / "ca.pem"
    cert.write_text(PEM)
    out = tmp_path / "init.toml"
    rc = main(
        [
            "initdata",
            "new",
            "--kbs-url",
            "https://kbs.example:8080/",
            "--kbs-cert",
            str(cert),
            "--algorithm",
            alg,
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    doc = InitData.parse(out.read_bytes())
    assert doc.algorithm == alg and set(doc.data) == {"aa.toml", "cdh.toml", "policy.rego"}
    aa = parse_aa(doc.data["aa.toml"])
    cdh = parse_cdh(doc.data["cdh.toml"])
    assert aa.kbs is not None and aa.kbs.url == "https://kbs.example:8080"
    assert aa.kbs.cert is not None and "MIIBfake" in aa.kbs.cert
    assert cdh.kbc.url == "https://kbs.example:8080" and cdh.kbc.kbs_cert == aa.kbs.cert
    claims = doc.claims()
    assert claims["agent_policy_claims"] == {"containers": []}
    assert claims["cdh.toml"]["kbc"]["name"] == "cc_kbc"

    assert main(["initdata", "digest", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == hashlib.new(alg, out.read_bytes()).hexdigest()
    if alg == "sha256":
        expected = hashlib.sha256(b"\0" * 32 + bytes.fromhex(lines[0])).hexdigest()
        assert lines[1] == f"pcr8 {expected}"
    else:
        assert len(lines) == 1


def test_custom_policy_and_bad_url(tmp_path: Path) -> None:
    policy = "package agent_policy\ndefault CreateContainerRequest := false\n"
    text = build_initdata("http://10.0.0.1:8080", kbs_cert=None, policy=policy)
    assert tomllib.loads(text)["data"]["policy.rego"] == policy
    assert main(["initdata", "new", "--kbs-url", 'https://x"]\n[evil]']) == 2
    assert main(["initdata", "new", "--kbs-url", "ftp://x"]) == 2


def test_annotation_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "init.toml"
    src.write_text(build_initdata("https://kbs:8080", kbs_cert=None, policy=None))
    assert main(["initdata", "annotation", str(src)]) == 0
    encoded = capsys.readouterr().out.strip()
    assert decode_annotation(encoded) == src.read_bytes()
    ann = tmp_path / "ann.txt"
    ann.write_text(encoded)
    assert main(["initdata", "annotation", "--decode", str(ann)]) == 0
    assert capsys.readouterr().out == src.read_text()


def test_invalid_initdata_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('version = "0.2.0"\nalgorithm = "sha256"\n')
    assert main(["initdata", "digest", str(bad)]) == 4
    assert main(["initdata", "annotation", "--decode", str(bad)]) == 4
    assert main(["initdata", "digest", str(tmp_path / "missing")]) == 2
