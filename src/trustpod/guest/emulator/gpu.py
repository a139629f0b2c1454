"""An EMULATED NVIDIA Hopper GPU: our own device root, a DICE-style leaf, real SPDM reports.

Nothing here is NVIDIA's: subjects say ``O=trustpod EMULATED``, and the ``nvidia`` verifier only
accepts the chain when the KBS configuration lists ``root.pem`` in ``[trustpod]
insecure_emulated_roots`` (warned at start, counted per attestation as ``nvidia.emulated_root``).
What is real is the shape, so the verifier runs the same code path as for a Hopper GPU:

* chain (leaf first): ``EMULATED GSP FMC LF`` (P-384, carries the TCG DICE TcbInfo extension
  ``2.23.133.5.4.1`` whose last 48 bytes are the FWID) -> ``EMULATED Device Identity CA``
  (P-384, self-signed);
* report: SPDM 1.1 GET_MEASUREMENTS request (37 B, the caller's 32-byte nonce) followed by the
  MEASUREMENTS response (DMTF blocks, opaque data with driver/VBIOS versions and the FWID) and a
  raw r||s ECDSA P-384 signature over all preceding bytes.

Files (``save``/``load``): ``root.pem`` (the file to trust), ``chain.pem``, ``leaf.key.pem``
(0600) and ``gpu.json`` (uuid, versions, measurements).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

__all__ = ["EMULATED_DRIVER", "EMULATED_VBIOS", "EmulatedGpu", "build_report"]

EMULATED_DRIVER = "550.90.07"
#: VBIOS opaque bytes giving the version string ``96.00.9f.00.01``.
EMULATED_VBIOS = bytes.fromhex("009f009601000000")
_OID_TCB_INFO = x509.ObjectIdentifier("2.23.133.5.4.1")


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trustpod EMULATED"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _cert(
    subject: str,
    issuer: str,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    fwid: bytes | None = None,
) -> x509.Certificate:
    now = _dt.datetime(2024, 1, 1, tzinfo=_dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(_dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=_dt.UTC))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if fwid is not None:
        # a minimal DiceTcbInfo-shaped value: SEQUENCE { [6] fwids: SEQUENCE { SEQUENCE {
        # hashAlg OID sha384, digest OCTET STRING(48) } } } -- the FWID is its last 48 bytes
        sha384 = bytes.fromhex("0609608648016503040202")
        fw = sha384 + b"\x04\x30" + fwid
        fw = b"\x30" + bytes([len(fw)]) + fw
        fws = b"\xa6" + bytes([len(fw) + 2]) + b"\x30" + bytes([len(fw)]) + fw
        value = b"\x30" + bytes([len(fws)]) + fws
        b = b.add_extension(x509.UnrecognizedExtension(_OID_TCB_INFO, value), critical=False)
    return b.sign(signer, hashes.SHA384())


def _opaque(items: list[tuple[int, bytes]]) -> bytes:
    return b"".join(struct.pack("<HH", t, len(d)) + d for t, d in items)


def build_report(
    key: ec.EllipticCurvePrivateKey,
    nonce: bytes,
    measurements: dict[int, bytes],
    opaque_items: list[tuple[int, bytes]],
) -> bytes:
    """SPDM request || response || raw r||s signature (layout in ``evidence.nvidia_spdm``)."""
    if len(nonce) != 32:
        raise ValueError("SPDM nonce must be 32 bytes")
    request = bytes([0x11, 0xE0, 0x01, 0xFF]) + nonce + b"\x00"
    record = b"".join(
        bytes([i, 1]) + struct.pack("<H", len(v) + 3) + bytes([1]) + struct.pack("<H", len(v)) + v
        for i, v in sorted(measurements.items())
    )
    opaque = _opaque(opaque_items)
    response = (
        bytes([0x11, 0x60, 0x00, 0x00, len(measurements)])
        + len(record).to_bytes(3, "little")
        + record
        + secrets.token_bytes(32)
        + struct.pack("<H", len(opaque))
        + opaque
    )
    signed = request + response
    r, s = decode_dss_signature(key.sign(signed, ec.ECDSA(hashes.SHA384())))
    return signed + r.to_bytes(48, "big") + s.to_bytes(48, "big")


@dataclass
class EmulatedGpu:
    """An emulated Hopper GPU (keys in memory; ``save``/``load`` for a state directory)."""

    leaf_key: ec.EllipticCurvePrivateKey
    root_pem: bytes
    chain_pem: bytes
    fwid: bytes
    uuid: str = "GPU-00000000-trustpod-emulated"
    driver_version: str = EMULATED_DRIVER
    measurements: dict[int, bytes] = field(default_factory=dict)
    #: the emulated root's key (in memory only; tests sign OCSP responses with it)
    root_key: ec.EllipticCurvePrivateKey | None = None

    @classmethod
    def create(cls, measurements: dict[int, bytes] | None = None) -> EmulatedGpu:
        root_key = ec.generate_private_key(ec.SECP384R1())
        leaf_key = ec.generate_private_key(ec.SECP384R1())
        fwid = secrets.token_bytes(48)
        root = _cert(
            "EMULATED Device Identity CA",
            "EMULATED Device Identity CA",
            root_key,
            root_key,
            ca=True,
        )
        leaf = _cert(
            "EMULATED GSP FMC LF",
            "EMULATED Device Identity CA",
            leaf_key,
            root_key,
            ca=False,
            fwid=fwid,
        )
        pem = serialization.Encoding.PEM
        if measurements is None:
            measurements = {i: hashlib.sha384(b"emulated gpu %d" % i).digest() for i in range(1, 9)}
        return cls(
            leaf_key,
            root.public_bytes(pem),
            leaf.public_bytes(pem) + root.public_bytes(pem),
            fwid,
            measurements=measurements,
            root_key=root_key,
        )

    @property
    def root_der(self) -> bytes:
        cert = x509.load_pem_x509_certificate(self.root_pem)
        return cert.public_bytes(serialization.Encoding.DER)

    def report(self, nonce: bytes) -> bytes:
        items = [
            (3, self.driver_version.encode() + b"\0"),
            (6, EMULATED_VBIOS),
            (15, b"882\0"),
            (17, b"1010\0"),
            (18, b"0200\0"),
            (20, self.fwid),
        ]
        return build_report(self.leaf_key, nonce, self.measurements, items)

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        """``nvidia`` evidence for ``report_data``: what ``NvidiaAttester`` sends for this GPU."""
        from trustpod.guest.attesters.nvidia import EmulatedSource, NvidiaAttester

        return NvidiaAttester(EmulatedSource(self)).get_evidence(report_data)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "root.pem").write_bytes(self.root_pem)
        (directory / "chain.pem").write_bytes(self.chain_pem)
        key = self.leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(directory / "leaf.key.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        meta = {
            "uuid": self.uuid,
            "driver_version": self.driver_version,
            "fwid": self.fwid.hex(),
            "measurements": {str(k): v.hex() for k, v in self.measurements.items()},
        }
        (directory / "gpu.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path) -> EmulatedGpu:
        key = serialization.load_pem_private_key((directory / "leaf.key.pem").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("emulated GPU leaf key must be EC")
        meta = json.loads((directory / "gpu.json").read_text())
        return cls(
            key,
            (directory / "root.pem").read_bytes(),
            (directory / "chain.pem").read_bytes(),
            bytes.fromhex(meta["fwid"]),
            uuid=meta["uuid"],
            driver_version=meta["driver_version"],
            measurements={int(k): bytes.fromhex(v) for k, v in meta["measurements"].items()},
        )
