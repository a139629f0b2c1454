"""AMD's ARK/ASK/ASVK shipped in the package, pinned by fingerprint (collateral.bundled)."""

from __future__ import annotations

import base64
import json
import subprocess
from importlib import resources
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustpod.cli.main import main
from trustpod.collateral.bundled import (
    BUNDLED_ROOTS_DIR,
    BundledAmdRoots,
    bundled_pem_name,
    load_bundled,
)
from trustpod.collateral.ports import AmdTcb
from trustpod.errors import EvidenceError, NotFoundError
from trustpod.verifiers.roots import (
    AMD_ARK_SHA256,
    AMD_ASK_SHA256,
    AMD_ASVK_SHA256,
    AMD_PRODUCTS,
    der_fingerprint,
)

REPO = Path(__file__).resolve().parents[1]


def _pem(product: str) -> bytes:
    ref = resources.files("trustpod.collateral") / BUNDLED_ROOTS_DIR / bundled_pem_name(product)
    return ref.read_bytes()


@pytest.mark.parametrize("product", AMD_PRODUCTS)
def test_every_product_loads_and_matches_its_pins(product: str) -> None:
    ca = BundledAmdRoots().get_ca_certs(product)
    assert ca.ark is not None and ca.ask is not None and ca.asvk is not None
    assert der_fingerprint(ca.ark) == AMD_ARK_SHA256[product]
    assert der_fingerprint(ca.ask) == AMD_ASK_SHA256[product]
    assert der_fingerprint(ca.asvk) == AMD_ASVK_SHA256[product]
    ark = x509.load_der_x509_certificate(ca.ark)
    x509.load_der_x509_certificate(ca.ask).verify_directly_issued_by(ark)
    x509.load_der_x509_certificate(ca.asvk).verify_directly_issued_by(ark)


def test_tampered_bundles_are_refused() -> None:
    milan, genoa = _pem("Milan"), _pem("Genoa")
    certs = x509.load_pem_x509_certificates(milan)
    # another product's file under this product's name
    with pytest.raises(EvidenceError) as err:
        load_bundled("Milan", genoa)
    assert err.value.reason == "collateral.bundled_root"
    # a certificate missing, one duplicated, one appended
    two = b"".join(c.public_bytes(Encoding.PEM) for c in certs[:2])
    with pytest.raises(EvidenceError, match="lacks"):
        load_bundled("Milan", two)
    with pytest.raises(EvidenceError):
        load_bundled("Milan", milan + certs[0].public_bytes(Encoding.PEM))
    with pytest.raises(EvidenceError):
        load_bundled(
            "Milan", milan + x509.load_pem_x509_certificates(genoa)[0].public_bytes(Encoding.PEM)
        )
    with pytest.raises(EvidenceError):
        load_bundled("Milan", b"not a pem")
    with pytest.raises(NotFoundError):
        BundledAmdRoots().get_ca_certs("Naples")
    with pytest.raises(NotFoundError):
        BundledAmdRoots().get_vcek("Milan", "00" * 64, AmdTcb(3, 0, 8, 115))


def test_roots_are_package_data_not_ignored_by_git() -> None:
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=REPO, text=True,
                            capture_output=True)  # fmt: skip
    if inside.returncode != 0:
        pytest.skip("not a git checkout (an unpacked archive): nothing to check against")
    for product in AMD_PRODUCTS:
        rel = f"src/trustpod/collateral/{BUNDLED_ROOTS_DIR}/{bundled_pem_name(product)}"
        assert (REPO / rel).is_file()
        ignored = subprocess.run(["git", "check-ignore", "-q", rel], cwd=REPO)
        assert ignored.returncode == 1, f"{rel} is git-ignored, hatch would leave it out"


def test_verify_azure_evidence_with_no_collateral_step(
    verifier_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ev = verifier_data / "az-snp-vtpm/evidence-v1.json"
    capsys.readouterr()
    args = ["verify", "--tee", "az-snp-vtpm", "--evidence", str(ev)]
    assert main([*args, "--report-data-text", "challenge"]) == 0
    claims = json.loads(capsys.readouterr().out)
    assert claims["report_data"] == "6368616c6c656e6765"
    # still fail closed on the evidence itself
    assert main([*args, "--report-data-text", "other"]) == 1
    assert "[vtpm.nonce]" in capsys.readouterr().err


def test_verify_azure_evidence_with_a_flipped_report_byte(
    verifier_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads((verifier_data / "az-snp-vtpm/evidence-v1.json").read_text())
    text = doc["hcl_report"]
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    raw[0x20 + 0x90] ^= 1  # inside the SNP report's signed region (after the HCL header)
    doc["hcl_report"] = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    ev = tmp_path / "flipped.json"
    ev.write_text(json.dumps(doc))
    args = ["verify", "--tee", "az-snp-vtpm", "--evidence", str(ev)]
    assert main([*args, "--report-data-text", "challenge"]) == 1
