"""Intel DCAP collateral as typed values: signed TCB info / QE identity, CRLs, issuer chains. Pure.

The PCS serves ``{"tcbInfo": {...}, "signature": "<hex r||s>"}`` (and ``enclaveIdentity``); the
signature covers the exact bytes of the inner JSON object as served, so the raw text is kept
and never re-serialised. Issuer chains come from PCS response headers (URL-encoded PEM); the
vectors ship the JSON bodies without them (see ADR 0500).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from trustpod.errors import EvidenceError
from trustpod.evidence.intel_pck import touch_certificate

__all__ = ["MAX_COLLATERAL_BYTES", "IntelCollateral", "SignedCollateral", "parse_rfc3339"]

MAX_COLLATERAL_BYTES = 1024 * 1024  #: named limit per collateral item


def _fail(msg: str) -> EvidenceError:
    return EvidenceError(f"Intel collateral: {msg}", reason="tdx.collateral_malformed")


def parse_rfc3339(text: Any, what: str) -> _dt.datetime:
    if not isinstance(text, str):
        raise _fail(f"{what} is not a date string")
    try:
        value = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _fail(f"{what} {text!r} is not RFC 3339") from exc
    if value.tzinfo is None:
        raise _fail(f"{what} {text!r} has no time zone")
    return value.astimezone(_dt.UTC)


def _load_chain(pem: bytes | None, what: str) -> tuple[x509.Certificate, ...]:
    if not pem:
        return ()
    try:
        certs = tuple(x509.load_pem_x509_certificates(pem))
        for cert in certs:
            touch_certificate(cert)
        return certs
    except (ValueError, UnsupportedAlgorithm, x509.UnsupportedGeneralNameType) as exc:
        raise _fail(f"{what} is not a PEM certificate chain") from exc


@dataclass(frozen=True, slots=True)
class SignedCollateral:
    """``tcbInfo`` or ``enclaveIdentity`` with the exact signed bytes and its issuer chain."""

    key: str
    body: dict[str, Any]
    signed_bytes: bytes
    signature: bytes
    issuer_chain: tuple[x509.Certificate, ...]
    issue_date: _dt.datetime
    next_update: _dt.datetime

    @classmethod
    def parse(cls, raw: bytes, key: str, issuer_chain_pem: bytes | None = None) -> SignedCollateral:
        if len(raw) > MAX_COLLATERAL_BYTES:
            raise _fail(f"{key} document is over {MAX_COLLATERAL_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
            doc = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _fail(f"{key} document is not JSON") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get(key), dict):
            raise _fail(f"document has no {key!r} object")
        sig_hex = doc.get("signature")
        try:
            signature = bytes.fromhex(sig_hex) if isinstance(sig_hex, str) else b""
        except ValueError:
            signature = b""
        if len(signature) != 64:
            raise _fail(f"{key} signature must be 64 bytes of hex")
        # The signed bytes are the inner object's text exactly as served.
        start = text.find(f'"{key}"')
        colon = text.find(":", start)
        dec = json.JSONDecoder()
        pos = colon + 1
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        try:
            _, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:  # pragma: no cover - json.loads succeeded above
            raise _fail(f"cannot locate the signed {key} text") from exc
        body: dict[str, Any] = doc[key]
        return cls(
            key=key,
            body=body,
            signed_bytes=text[pos:end].encode("utf-8"),
            signature=signature,
            issuer_chain=_load_chain(issuer_chain_pem, f"{key} issuer chain"),
            issue_date=parse_rfc3339(body.get("issueDate"), f"{key}.issueDate"),
            next_update=parse_rfc3339(body.get("nextUpdate"), f"{key}.nextUpdate"),
        )


@dataclass(frozen=True, slots=True)
class IntelCollateral:
    """Everything DCAP verification needs besides the quote. CRLs and chains may be absent
    only when the matching ``insecure_`` option is set (the verifier refuses otherwise)."""

    tcb_info: SignedCollateral
    qe_identity: SignedCollateral
    pck_crl: x509.CertificateRevocationList | None = None
    root_ca_crl: x509.CertificateRevocationList | None = None

    @classmethod
    def from_parts(
        cls,
        *,
        tcb_info: bytes,
        qe_identity: bytes,
        tcb_info_issuer_chain: bytes | None = None,
        qe_identity_issuer_chain: bytes | None = None,
        pck_crl: bytes | None = None,
        root_ca_crl: bytes | None = None,
    ) -> IntelCollateral:
        return cls(
            tcb_info=SignedCollateral.parse(tcb_info, "tcbInfo", tcb_info_issuer_chain),
            qe_identity=SignedCollateral.parse(
                qe_identity, "enclaveIdentity", qe_identity_issuer_chain
            ),
            pck_crl=_load_crl(pck_crl, "PCK CRL"),
            root_ca_crl=_load_crl(root_ca_crl, "root CA CRL"),
        )


def _load_crl(raw: bytes | None, what: str) -> x509.CertificateRevocationList | None:
    if not raw:
        return None
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(raw)
        if all(c in b"0123456789abcdefABCDEF\r\n" for c in raw):  # PCCS serves hex
            raw = bytes.fromhex(raw.decode("ascii"))
        return x509.load_der_x509_crl(raw)
    except ValueError as exc:
        raise _fail(f"{what} is not a DER/PEM/hex CRL") from exc
