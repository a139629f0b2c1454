"""OCSP for the NVIDIA device certificate chain (optional; nvtrust's local verifier does it).

Upstream Trustee's local verifier does no OCSP; NRAS and nvtrust do (``https://ocsp.ndis.nvidia.com/``,
SHA-384 CertID, an OCSP nonce extension). Steps, per certificate below the root:

  (o1) request: ``OCSPRequestBuilder`` with the certificate, its issuer, SHA-384, and a fresh
       nonce; POSTed through the ``OcspPort`` (I/O side: ``collateral.nvidia``);
  (o2) response: status successful; signed by the issuer itself or by a responder certificate
       the issuer issued (delegated responder with the OCSPSigning EKU); signature checked;
  (o3) the single response names this certificate (serial, issuer hashes), ``this_update <= now``
       and ``now <= next_update`` when given, the nonce echoed when the responder sends one;
  (o4) status ``GOOD`` for every certificate; ``REVOKED`` or ``UNKNOWN`` raises.

Results are cached per chain until the earliest ``next_update`` (at most ``max_age``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import os
import threading
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from trustpod.errors import VerificationError

__all__ = ["DEFAULT_OCSP_MAX_AGE", "OcspChecker", "OcspPort", "check_certificate"]

DEFAULT_OCSP_MAX_AGE = _dt.timedelta(hours=1)


class OcspPort(Protocol):
    """Port: POST a DER OCSP request, return the DER response (raises ``DependencyError``)."""

    def post(self, url: str, body: bytes) -> bytes: ...


def _fail(msg: str, reason: str = "nvidia.ocsp") -> VerificationError:
    return VerificationError(f"NVIDIA OCSP: {msg}", reason=reason)


def _verify_signed_by(resp: ocsp.OCSPResponse, signer: x509.Certificate) -> None:
    key = signer.public_key()
    algo = resp.signature_hash_algorithm
    if not isinstance(key, ec.EllipticCurvePublicKey) or algo is None:
        raise _fail("responder key is not ECDSA")
    try:
        key.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(algo))
    except (InvalidSignature, UnsupportedAlgorithm) as exc:
        raise _fail("response signature does not verify") from exc


def _responder(resp: ocsp.OCSPResponse, issuer: x509.Certificate) -> x509.Certificate:
    """(o2) The issuer, or a delegated responder certificate issued by it."""
    if resp.responder_name == issuer.subject or resp.responder_key_hash == _key_hash(issuer):
        return issuer
    for cert in resp.certificates:
        try:
            cert.verify_directly_issued_by(issuer)
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (InvalidSignature, ValueError, TypeError, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in eku:
            return cert
    raise _fail("response is not signed by the issuer or its delegated responder")


def _key_hash(cert: x509.Certificate) -> bytes:
    ski = x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    return ski.digest


def check_certificate(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    port: OcspPort,
    url: str,
    now: _dt.datetime,
) -> _dt.datetime | None:
    """(o1)-(o4) for one certificate; returns its response's ``next_update``."""
    nonce = os.urandom(16)
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, issuer, hashes.SHA384())
        .add_extension(x509.OCSPNonce(nonce), critical=False)
        .build()
    )
    raw = port.post(url, request.public_bytes(Encoding.DER))
    try:
        resp = ocsp.load_der_ocsp_response(raw)
    except ValueError as exc:
        raise _fail(f"unparseable response ({exc})") from exc
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise _fail(f"responder answered {resp.response_status.name}")
    _verify_signed_by(resp, _responder(resp, issuer))
    if resp.serial_number != cert.serial_number:
        raise _fail("response is for another certificate")
    try:
        echoed = resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        echoed = None
    if echoed is not None and echoed != nonce:
        raise _fail("response nonce does not match the request")
    this, nxt = resp.this_update_utc, resp.next_update_utc
    if this > now or (nxt is not None and now > nxt):
        raise _fail(f"response not current at {now.isoformat()}", "nvidia.ocsp_stale")
    if resp.certificate_status != ocsp.OCSPCertStatus.GOOD:
        raise _fail(
            f"{cert.subject.rfc4514_string()} is {resp.certificate_status.name}",
            "nvidia.ocsp_revoked",
        )
    return nxt


@dataclass(frozen=True, slots=True)
class _Entry:
    until: _dt.datetime


class OcspChecker:
    """Checks a chain (leaf first, root last) and caches good results per chain."""

    def __init__(
        self, port: OcspPort, url: str, *, max_age: _dt.timedelta = DEFAULT_OCSP_MAX_AGE
    ) -> None:
        self._port, self._url, self._max_age = port, url, max_age
        self._lock = threading.Lock()
        self._good: dict[bytes, _Entry] = {}

    def check(self, certs_der: tuple[bytes, ...], now: _dt.datetime) -> None:
        digest = hashlib.sha256(b"".join(certs_der)).digest()
        with self._lock:
            entry = self._good.get(digest)
        if entry is not None and now <= entry.until:
            return
        until = now + self._max_age
        certs = [x509.load_der_x509_certificate(d) for d in certs_der]
        for cert, issuer in itertools.pairwise(certs):
            nxt = check_certificate(cert, issuer, self._port, self._url, now)
            if nxt is not None:
                until = min(until, nxt)
        with self._lock:
            if len(self._good) > 1024:
                self._good.clear()
            self._good[digest] = _Entry(until)
