"""Test-only Intel DCAP look-alike: emulated root, Platform CA, PCK (with SGX extensions), TCB
signer and CRLs; re-signs a real TD quote's header+body under an emulated attestation key.

Lets the complete DCAP path (CRLs, revocation, every TCB status) and dcap-qvl's cross-check run
offline. Nothing here is trusted unless a test passes the root via ``extra_roots_der``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

START = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(2040, 1, 1, tzinfo=dt.UTC)
SGX = "1.2.840.113741.1.13.1"
PPID = b"\x11" * 16


def _der(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + value


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    out = bytes([parts[0] * 40 + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        out += bytes(reversed(chunk))
    return _der(0x06, out)


def _int(v: int) -> bytes:
    raw = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big")
    return _der(0x02, raw)


def _entry(oid: str, value: bytes) -> bytes:
    return _der(0x30, _oid(oid) + value)


def sgx_extension(
    comps: tuple[int, ...],
    pce_svn: int,
    fmspc: bytes,
    sgx_type: int = 0,
    ppid: bytes = b"\x11" * 16,
) -> bytes:
    tcb = b"".join(_entry(f"{SGX}.2.{i + 1}", _int(c)) for i, c in enumerate(comps))
    tcb += _entry(f"{SGX}.2.17", _int(pce_svn)) + _entry(f"{SGX}.2.18", _der(0x04, bytes(comps)))
    body = _entry(f"{SGX}.1", _der(0x04, ppid))
    body += _entry(f"{SGX}.2", _der(0x30, tcb))
    body += _entry(f"{SGX}.3", _der(0x04, b"\x00\x00"))
    body += _entry(f"{SGX}.4", _der(0x04, fmspc))
    body += _entry(f"{SGX}.5", _der(0x0A, bytes([sgx_type])))
    return _der(0x30, body)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool,
    sgx: bytes | None = None,
) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(START)
        .not_valid_after(END)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=not ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if subject != issuer:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if sgx is not None:
        ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX), sgx)
        b = b.add_extension(ext, critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _rs(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


@dataclass
class Emulated:
    quote: bytes
    root_der: bytes
    tcb_info: bytes
    qe_identity: bytes
    tcb_chain: bytes
    pck_crl: bytes
    root_ca_crl: bytes
    pck_crl_chain: bytes
    pck_serial: int


def _crl(issuer: str, key: ec.EllipticCurvePrivateKey, revoked: tuple[int, ...] = ()) -> bytes:
    now = dt.datetime(2025, 10, 1, tzinfo=dt.UTC)
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(_name(issuer))
        .last_update(now)
        .next_update(now + dt.timedelta(days=90))
        .add_extension(x509.CRLNumber(3), critical=False)
    )
    for serial in revoked:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    return b.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


def _resign_json(raw: bytes, key_name: str, key: ec.EllipticCurvePrivateKey, edit: dict) -> bytes:  # type: ignore[type-arg]
    body = json.loads(raw)[key_name]
    body.update(edit)
    inner = json.dumps(body, separators=(",", ":")).encode()
    return (
        b'{"'
        + key_name.encode()
        + b'":'
        + inner
        + b',"signature":"'
        + _rs(key, inner).hex().encode()
        + b'"}'
    )


def emulate(
    real_quote: bytes,
    tcb_info: bytes,
    qe_identity: bytes,
    *,
    pce_svn: int = 11,
    comps: tuple[int, ...] = (2, 2, 7, 7, 4, 1, 0, 2) + (0,) * 8,
    revoke_pck: bool = False,
    revoke_ca: bool = False,
    ca_kind: str = "Platform",
    tcb_edit: dict | None = None,  # type: ignore[type-arg]
    tee_tcb_svn: bytes | None = None,
    zero_service_td: bool = False,
    tee_tcb_svn2: bytes | None = None,
) -> Emulated:
    """Re-sign ``real_quote``'s header+body (v4 or v5) under a fully emulated DCAP hierarchy."""
    root_k, ca_k, pck_k, tcb_k, att_k = (ec.generate_private_key(ec.SECP256R1()) for _ in range(5))
    root = _cert("Test SGX Root CA", root_k, "Test SGX Root CA", root_k, True)
    ca_name = f"Test SGX PCK {ca_kind} CA"
    ca = _cert(ca_name, ca_k, "Test SGX Root CA", root_k, True)
    fmspc = bytes.fromhex(json.loads(tcb_info)["tcbInfo"]["fmspc"])
    pck = _cert("Test SGX PCK Certificate", pck_k, ca_name, ca_k, False,
                sgx_extension(comps, pce_svn, fmspc))  # fmt: skip
    tcb_cert = _cert("Test SGX TCB Signing", tcb_k, "Test SGX Root CA", root_k, False)
    ident = json.loads(qe_identity)["enclaveIdentity"]
    att_pub = att_k.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]
    auth = bytes(range(32))
    qe = bytearray(384)
    qe[48:64] = bytes.fromhex(ident["attributes"])
    qe[128:160] = bytes.fromhex(ident["mrsigner"])
    struct.pack_into("<HH", qe, 256, ident["isvprodid"], ident["tcbLevels"][0]["tcb"]["isvsvn"])
    qe[320:352] = hashlib.sha256(att_pub + auth).digest()
    version = struct.unpack_from("<H", real_quote, 0)[0]
    body_off = 48 if version == 4 else 54
    body_len = 584 if version == 4 else struct.unpack_from("<I", real_quote, 50)[0]
    body = bytearray(real_quote[: body_off + body_len])
    if tee_tcb_svn is not None:
        body[body_off : body_off + 16] = tee_tcb_svn
    if tee_tcb_svn2 is not None and version == 5:
        body[body_off + 584 : body_off + 600] = tee_tcb_svn2
    if zero_service_td and version == 5:
        body[body_off + 600 : body_off + 648] = bytes(48)
    signed = bytes(body)
    pem = _pem(pck, ca, root)
    inner = bytes(qe) + _rs(pck_k, bytes(qe)) + struct.pack("<H", len(auth)) + auth
    inner += struct.pack("<HI", 5, len(pem)) + pem
    sig = _rs(att_k, signed) + att_pub + struct.pack("<HI", 6, len(inner)) + inner
    quote = signed + struct.pack("<I", len(sig)) + sig
    return Emulated(
        quote=quote,
        root_der=root.public_bytes(Encoding.DER),
        tcb_info=_resign_json(tcb_info, "tcbInfo", tcb_k, tcb_edit or {}),
        qe_identity=_resign_json(qe_identity, "enclaveIdentity", tcb_k, {}),
        tcb_chain=_pem(tcb_cert, root),
        pck_crl=_crl(ca_name, ca_k, (pck.serial_number,) if revoke_pck else ()),
        root_ca_crl=_crl("Test SGX Root CA", root_k, (ca.serial_number,) if revoke_ca else ()),
        pck_crl_chain=_pem(ca, root),
        pck_serial=pck.serial_number,
    )
