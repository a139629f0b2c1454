"""Helpers for the SNP / az-snp-vtpm / TPM tests: real AMD CA from the vectors, and a small
emulated AMD chain (RSA-2048 for speed) that signs reports built with ``SnpReport.build``."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from trustpod._internal.b64 import b64url_encode
from trustpod.collateral.ports import AmdCaCerts, MemoryAmdCollateral
from trustpod.evidence.az import AzEvidence, AzTpmQuote
from trustpod.evidence.hcl import REPORT_TYPE_SNP, HclReport
from trustpod.evidence.snp import SnpReport, SnpTcb
from trustpod.evidence.tpm import ALG_SHA256, PcrSelection, TpmsAttest, pcr_digest

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
CHIP_ID = bytes(range(1, 65))
TCB = SnpTcb(bootloader=4, tee=0, snp=24, microcode=219)


def load_amd_ca(trustee_vectors: Path) -> MemoryAmdCollateral:
    """The real AMD ASK/ARK/ASVK per product, read from the vectors (never copied)."""
    ca = {}
    for product in ("Milan", "Genoa", "Turin"):
        pem = trustee_vectors / "deps/verifier/src/snp" / f"{product.lower()}_ask_ark_asvk.pem"
        ask, ark, asvk = (
            c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem.read_bytes())
        )
        ca[product] = AmdCaCerts(ark=ark, ask=ask, asvk=asvk)
    return MemoryAmdCollateral.from_ca(ca)


def _pss() -> padding.PSS:
    return padding.PSS(padding.MGF1(hashes.SHA384()), 48)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _der_int(v: int) -> bytes:
    body = v.to_bytes(1 if v < 128 else 2, "big")
    return bytes([0x02, len(body)]) + body


@dataclass
class EmulatedAmd:
    ark: x509.Certificate
    ask: x509.Certificate
    vcek: x509.Certificate
    vcek_key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(
        cls, *, chip_id: bytes = CHIP_ID, tcb: SnpTcb = TCB, octet_hwid: bool = False
    ) -> EmulatedAmd:
        ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        vcek_key = ec.generate_private_key(ec.SECP384R1())
        start, end = dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.datetime(2030, 1, 1, tzinfo=dt.UTC)

        def cert(subject: str, issuer: str, key: object, signer: rsa.RSAPrivateKey, exts=()):  # type: ignore[no-untyped-def]
            b = (
                x509.CertificateBuilder()
                .subject_name(_name(subject))
                .issuer_name(_name(issuer))
                .public_key(key)  # type: ignore[arg-type]
                .serial_number(x509.random_serial_number())
                .not_valid_before(start)
                .not_valid_after(end)
            )
            for oid, value in exts:
                b = b.add_extension(
                    x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), False
                )
            return b.sign(signer, hashes.SHA384(), rsa_padding=_pss())

        hwid = bytes([0x04, 0x40]) + chip_id if octet_hwid else chip_id
        exts = [
            ("1.3.6.1.4.1.3704.1.3.1", _der_int(tcb.bootloader)),
            ("1.3.6.1.4.1.3704.1.3.2", _der_int(tcb.tee)),
            ("1.3.6.1.4.1.3704.1.3.3", _der_int(tcb.snp)),
            ("1.3.6.1.4.1.3704.1.3.8", _der_int(tcb.microcode)),
            ("1.3.6.1.4.1.3704.1.4", hwid),
        ]
        ark = cert("ARK-Milan", "ARK-Milan", ark_key.public_key(), ark_key)
        ask = cert("SEV-Milan", "ARK-Milan", ask_key.public_key(), ark_key)
        vcek = cert("SEV-VCEK", "SEV-Milan", vcek_key.public_key(), ask_key, exts)
        return cls(ark, ask, vcek, vcek_key)

    def der(self, which: str) -> bytes:
        return getattr(self, which).public_bytes(Encoding.DER)  # type: ignore[no-any-return]

    def roots(self) -> tuple[bytes, ...]:
        return (self.der("ark"), self.der("ask"))

    def sign(self, report: SnpReport) -> SnpReport:
        sig = self.vcek_key.sign(report.signed_bytes(), ec.ECDSA(hashes.SHA384()))
        return report.with_signature(*decode_dss_signature(sig))

    def report(self, **fields: object) -> SnpReport:
        base: dict[str, object] = {
            "version": 3,
            "cpuid_fam_id": 0x19,
            "cpuid_mod_id": 0x01,
            "cpuid_step": 1,
            "chip_id": CHIP_ID,
            "reported_tcb": TCB,
            "current_tcb": TCB,
            "committed_tcb": TCB,
            "launch_tcb": TCB,
        }
        base.update(fields)
        return self.sign(SnpReport.build(**base))


def ak_jwk(key: rsa.RSAPublicKey) -> dict[str, object]:
    nums = key.public_numbers()
    return {
        "kid": "HCLAkPub",
        "key_ops": ["sign"],
        "kty": "RSA",
        "e": b64url_encode(nums.e.to_bytes(3, "big")),
        "n": b64url_encode(nums.n.to_bytes(key.key_size // 8, "big")),
    }


def az_snp_evidence(
    amd: EmulatedAmd,
    report_data: bytes,
    *,
    ak: rsa.RSAPrivateKey,
    pcrs: list[bytes] | None = None,
    user_data: bytes | None = None,
) -> dict[str, object]:
    """Emulated az-snp-vtpm evidence v2, built with the project's own builders."""
    pcrs = pcrs or [hashlib.sha256(bytes([i])).digest() for i in range(24)]
    var_data = json.dumps(
        {
            "keys": [ak_jwk(ak.public_key())],
            "vm-configuration": {"secure-boot": True},
            "user-data": (
                user_data if user_data is not None else report_data.ljust(64, b"\0")
            ).hex(),
        },
        separators=(",", ":"),
    ).encode()
    snp = amd.report(report_data=hashlib.sha256(var_data).digest() + bytes(32))
    hcl = HclReport.build(snp.to_bytes(), REPORT_TYPE_SNP, var_data)
    attest = TpmsAttest(
        qualified_signer=b"\x00\x0b" + bytes(32),
        extra_data=report_data,
        clock=1,
        reset_count=0,
        restart_count=0,
        safe=True,
        firmware_version=0,
        pcr_select=(PcrSelection(ALG_SHA256, b"\xff\xff\xff"),),
        pcr_digest=pcr_digest(pcrs),
    )
    message = attest.to_bytes()
    signature = ak.sign(message, padding.PKCS1v15(), hashes.SHA256())
    ev = AzEvidence(2, AzTpmQuote(signature, message, tuple(pcrs)), hcl, vcek=amd.der("vcek"))
    return ev.to_json()
