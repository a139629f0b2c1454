"""An EMULATED AMD SEV-SNP vendor chain (ARK -> ASK -> VCEK), generated locally.

Nothing here is AMD's: the subjects say ``O=trustpod EMULATED`` and a verifier only accepts the
chain when its configuration names ``ark.pem`` in ``insecure_emulated_roots``. What *is* real is
the shape, so the same verifier code path runs as on hardware:

* ARK: RSA-4096, self-signed, RSASSA-PSS with SHA-384 (MGF1-SHA-384, salt 48), CA, keyCertSign.
* ASK: RSA-4096, signed by the ARK (same scheme), CA with pathLen 0.
* VCEK: EC P-384 public key, signed by the ASK (same scheme), with AMD's VCEK extensions encoded
  as on certificates served by the AMD KDS (read from a real Milan VCEK):
  ``1.3.6.1.4.1.3704.1.1`` structVersion INTEGER, ``.1.2`` productName IA5String,
  ``.1.3.{1,2,3,8}`` blSPL/teeSPL/snpSPL/ucodeSPL INTEGER, ``.1.3.{4,5,6,7}`` reserved INTEGER 0,
  ``.1.4`` hwID = the raw 64-byte chip_id (no OCTET STRING wrapper, like KDS VCEKs).

Files written by :meth:`EmulatedVendor.save`: ``ark.pem``, ``ask.pem``, ``roots.pem`` (ARK then
ASK: the file to list in the KBS's ``[trustpod] insecure_emulated_roots``, because Azure evidence
carries only the VCEK), ``vcek.pem``, ``vcek.der``, ``ark.key.pem``, ``ask.key.pem``,
``vcek.key.pem`` (0600) and ``vendor.json`` (chip id, TCB, product).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from trustpod.errors import ConfigError

__all__ = [
    "AMD_OID_HWID",
    "AMD_OID_PRODUCT_NAME",
    "AMD_OID_SPL",
    "AMD_OID_STRUCT_VERSION",
    "CHIP_ID_SIZE",
    "EmulatedTcb",
    "EmulatedVendor",
    "load_or_create_vendor",
]

_log = logging.getLogger(__name__)

AMD_OID_STRUCT_VERSION = "1.3.6.1.4.1.3704.1.1"
AMD_OID_PRODUCT_NAME = "1.3.6.1.4.1.3704.1.2"
#: TCB component -> OID (``.3.4``..``.3.7`` are reserved and always 0 on Milan/Genoa VCEKs).
AMD_OID_SPL = {
    "bootloader": "1.3.6.1.4.1.3704.1.3.1",
    "tee": "1.3.6.1.4.1.3704.1.3.2",
    "snp": "1.3.6.1.4.1.3704.1.3.3",
    "microcode": "1.3.6.1.4.1.3704.1.3.8",
}
_AMD_OID_RESERVED_SPL = tuple(f"1.3.6.1.4.1.3704.1.3.{i}" for i in (4, 5, 6, 7))
AMD_OID_HWID = "1.3.6.1.4.1.3704.1.4"
CHIP_ID_SIZE = 64
_ORG = "trustpod EMULATED (not AMD)"
_OU = "EMULATED vendor chain - testing only"
_ARK_YEARS = 25
_VCEK_YEARS = 7
_FILE_MODE = 0o600


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def _name(cn: str) -> x509.Name:
    # Same attribute order as AMD's certificates (OU, C, L, ST, O, CN), different organisation.
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _OU),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Nowhere"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _der_int(value: int) -> bytes:
    if not 0 <= value <= 0xFF:
        raise ConfigError(f"SPL {value} out of range 0..255", reason="emulator.tcb")
    body = value.to_bytes(1, "big")
    if body[0] & 0x80:
        body = b"\x00" + body
    return bytes([0x02, len(body)]) + body


def _der_ia5(text: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) > 127:
        raise ConfigError("product name too long", reason="emulator.product")
    return bytes([0x16, len(raw)]) + raw


@dataclass(frozen=True, slots=True)
class EmulatedTcb:
    """The TCB SPLs certified in the VCEK and reported in ``reported_tcb`` (Milan-like defaults)."""

    bootloader: int = 3
    tee: int = 0
    snp: int = 8
    microcode: int = 115


@dataclass(frozen=True, slots=True)
class EmulatedVendor:
    """The emulated chain and the VCEK private key that signs emulated SNP reports."""

    ark: x509.Certificate
    ask: x509.Certificate
    vcek: x509.Certificate
    ark_key: rsa.RSAPrivateKey
    ask_key: rsa.RSAPrivateKey
    vcek_key: ec.EllipticCurvePrivateKey
    chip_id: bytes
    tcb: EmulatedTcb
    product: str

    @classmethod
    def generate(
        cls,
        *,
        chip_id: bytes | None = None,
        tcb: EmulatedTcb | None = None,
        product: str = "Milan",
        now: _dt.datetime | None = None,
    ) -> EmulatedVendor:
        """Generate a fresh ARK/ASK/VCEK. RSA-4096 key generation takes about a second each."""
        chip_id = secrets.token_bytes(CHIP_ID_SIZE) if chip_id is None else chip_id
        if len(chip_id) != CHIP_ID_SIZE:
            raise ConfigError(f"chip_id must be {CHIP_ID_SIZE} bytes", reason="emulator.chip_id")
        tcb = tcb or EmulatedTcb()
        now = now or _dt.datetime.now(_dt.UTC)
        start = now - _dt.timedelta(days=1)
        ark_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        ask_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        vcek_key = ec.generate_private_key(ec.SECP384R1())
        ark_name, ask_name = _name(f"ARK-{product}"), _name(f"SEV-{product}")
        ark = (
            x509.CertificateBuilder()
            .subject_name(ark_name)
            .issuer_name(ark_name)
            .public_key(ark_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + _dt.timedelta(days=365 * _ARK_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ark_key.public_key()), critical=False
            )
            .sign(ark_key, hashes.SHA384(), rsa_padding=_pss())
        )
        ask = (
            x509.CertificateBuilder()
            .subject_name(ask_name)
            .issuer_name(ark_name)
            .public_key(ask_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + _dt.timedelta(days=365 * _ARK_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ask_key.public_key()), critical=False
            )
            .sign(ark_key, hashes.SHA384(), rsa_padding=_pss())
        )
        vcek = cls._issue_vcek(ask_key, ask_name, vcek_key, chip_id, tcb, product, start)
        _log.warning("generated an EMULATED AMD vendor chain (%s); testing only", product)
        return cls(ark, ask, vcek, ark_key, ask_key, vcek_key, chip_id, tcb, product)

    @staticmethod
    def _issue_vcek(
        ask_key: rsa.RSAPrivateKey,
        ask_name: x509.Name,
        vcek_key: ec.EllipticCurvePrivateKey,
        chip_id: bytes,
        tcb: EmulatedTcb,
        product: str,
        start: _dt.datetime,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name("SEV-VCEK"))
            .issuer_name(ask_name)
            .public_key(vcek_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + _dt.timedelta(days=365 * _VCEK_YEARS))
        )
        values: list[tuple[str, bytes]] = [
            (AMD_OID_STRUCT_VERSION, _der_int(0)),
            (AMD_OID_PRODUCT_NAME, _der_ia5(f"{product}-B0")),
            (AMD_OID_SPL["bootloader"], _der_int(tcb.bootloader)),
            (AMD_OID_SPL["tee"], _der_int(tcb.tee)),
            *((oid, _der_int(0)) for oid in _AMD_OID_RESERVED_SPL),
            (AMD_OID_SPL["snp"], _der_int(tcb.snp)),
            (AMD_OID_SPL["microcode"], _der_int(tcb.microcode)),
            (AMD_OID_HWID, chip_id),
        ]
        for oid, value in values:
            ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value)
            builder = builder.add_extension(ext, critical=False)
        return builder.sign(ask_key, hashes.SHA384(), rsa_padding=_pss())

    @property
    def ark_der(self) -> bytes:
        """The emulated root, DER: what ``insecure_emulated_roots`` must contain."""
        return self.ark.public_bytes(serialization.Encoding.DER)

    @property
    def ask_der(self) -> bytes:
        return self.ask.public_bytes(serialization.Encoding.DER)

    @property
    def emulated_roots(self) -> tuple[bytes, bytes]:
        """``(ARK, ASK)`` DER: the value for ``VerifierSettings.insecure_emulated_roots`` (the
        ASK rides along because Azure evidence carries only the VCEK)."""
        return (self.ark_der, self.ask_der)

    @property
    def vcek_der(self) -> bytes:
        return self.vcek.public_bytes(serialization.Encoding.DER)

    def save(self, directory: Path) -> None:
        """Write certificates (PEM + ``vcek.der``), keys (0600) and ``vendor.json``."""
        directory.mkdir(parents=True, exist_ok=True)
        pem = serialization.Encoding.PEM
        for fname, cert in (("ark.pem", self.ark), ("ask.pem", self.ask), ("vcek.pem", self.vcek)):
            (directory / fname).write_bytes(cert.public_bytes(pem))
        (directory / "vcek.der").write_bytes(self.vcek_der)
        roots = self.ark.public_bytes(pem) + self.ask.public_bytes(pem)
        (directory / "roots.pem").write_bytes(roots)
        for fname, key in (
            ("ark.key.pem", self.ark_key),
            ("ask.key.pem", self.ask_key),
            ("vcek.key.pem", self.vcek_key),
        ):
            raw = key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            fd = os.open(directory / fname, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
        meta = {
            "emulated": True,
            "product": self.product,
            "chip_id": self.chip_id.hex(),
            "tcb": {
                "bootloader": self.tcb.bootloader,
                "tee": self.tcb.tee,
                "snp": self.tcb.snp,
                "microcode": self.tcb.microcode,
            },
        }
        (directory / "vendor.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> EmulatedVendor:
        """Load a chain written by :meth:`save`."""
        try:
            meta = json.loads((directory / "vendor.json").read_text())
            certs = [
                x509.load_pem_x509_certificate((directory / f).read_bytes())
                for f in ("ark.pem", "ask.pem", "vcek.pem")
            ]
            # our own keys, written by save(): skip RSA-4096's consistency check (~0.9 s per key,
            # paid by every emulated CVM boot)
            keys = [
                serialization.load_pem_private_key(
                    (directory / f).read_bytes(), password=None, unsafe_skip_rsa_key_validation=True
                )
                for f in ("ark.key.pem", "ask.key.pem", "vcek.key.pem")
            ]
            tcb = EmulatedTcb(**{k: int(v) for k, v in meta["tcb"].items()})
            chip_id = bytes.fromhex(meta["chip_id"])
            product = str(meta["product"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"cannot load the emulated vendor chain from {directory}: {exc}",
                reason="emulator.vendor_load",
                fix="delete the directory to regenerate it, or point to another one",
            ) from exc
        ark_key, ask_key, vcek_key = keys
        if not (
            isinstance(ark_key, rsa.RSAPrivateKey)
            and isinstance(ask_key, rsa.RSAPrivateKey)
            and isinstance(vcek_key, ec.EllipticCurvePrivateKey)
        ):
            raise ConfigError("unexpected key types in vendor dir", reason="emulator.vendor_load")
        ark, ask, vcek = certs
        return cls(ark, ask, vcek, ark_key, ask_key, vcek_key, chip_id, tcb, product)


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def load_or_create_vendor(directory: Path, *, product: str = "Milan") -> EmulatedVendor:
    """Load the chain in ``directory`` or generate and save one there (first boot)."""
    if (directory / "vendor.json").exists():
        return EmulatedVendor.load(directory)
    vendor = EmulatedVendor.generate(product=product)
    vendor.save(directory)
    return vendor
