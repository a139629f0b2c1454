"""NVIDIA device certificate chain: pinned root, issuer signatures, validity, FWID extension.

Upstream: ``deps/verifier/src/nvidia/cert_chain.rs``. The chain is a PEM list, leaf first
(Hopper: ``GH100 A01 GSP FMC LF`` -> ``GH100 A01 GSP BROM`` -> ``NVIDIA GH100 Provisioner ICA 1``
-> ``NVIDIA GH100 Identity`` -> ``NVIDIA Device Identity CA``). Steps:

  (c1) at least two certificates (root and signing leaf), at most ``max_chain_len``;
  (c2) the last one is a pinned root: upstream pins the SHA-1 fingerprint of its bundled
       ``nvidia_device_root.pem``; we pin the SHA-256 of the same certificate's DER (and list the
       SHA-1 for cross-checking). The certificate itself is not shipped: it arrives in the
       evidence and is accepted by fingerprint only. Emulated roots (``insecure_emulated_roots``,
       self-signed P-384) are accepted too and marked;
  (c3) the leaf carries the TCG DICE TcbInfo extension ``2.23.133.5.4.1``; its last 48 bytes
       are the FWID, returned for the caller to compare with the report's opaque ``fwid``;
  (c4) every certificate is directly issued by the next (signature + issuer name), the root is
       self-signed, every issuer is a CA when it says so, all are valid at ``now`` (OpenSSL's
       ``X509_verify_cert`` in upstream);
  (c5) the leaf key is ECDSA P-384.

Verified chains are cached (bounded LRU keyed by the chain's DER digests and the anchors); a hit
re-checks only the validity window.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from trustpod.errors import VerificationError

__all__ = [
    "DEFAULT_CHAIN_CACHE_SIZE",
    "DEFAULT_MAX_CHAIN_LEN",
    "FWID_SIZE",
    "NVIDIA_DEVICE_ROOT_SHA1",
    "NVIDIA_DEVICE_ROOT_SHA256",
    "OID_DICE_TCB_INFO",
    "DeviceChain",
    "DeviceChainCache",
    "DeviceRoots",
    "leaf_fwid",
    "verify_device_chain",
]

#: SHA-256 of the DER of NVIDIA's ``CN=NVIDIA Device Identity CA, O=NVIDIA`` (P-384,
#: 2021-11-05 .. 9999-12-31), the root trustee bundles as ``nvidia_device_root.pem``.
NVIDIA_DEVICE_ROOT_SHA256 = "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"
#: Upstream's pin (SHA-1 of the same DER), for cross-checking only.
NVIDIA_DEVICE_ROOT_SHA1 = "72be15b8b2c8d3f482f84237a6fcc45b8a1354e8"
OID_DICE_TCB_INFO = x509.ObjectIdentifier("2.23.133.5.4.1")
FWID_SIZE = 48
DEFAULT_MAX_CHAIN_LEN = 8
DEFAULT_CHAIN_CACHE_SIZE = 256


def _fail(msg: str, reason: str, fix: str | None = None) -> VerificationError:
    return VerificationError(f"NVIDIA certificate chain: {msg}", reason=reason, fix=fix)


@dataclass(frozen=True, slots=True)
class DeviceRoots:
    """Accepted device roots by SHA-256 of DER; ``emulated`` are the insecure ones."""

    pinned: frozenset[str]
    emulated: frozenset[str] = frozenset()

    @classmethod
    def default(cls, insecure_emulated: tuple[bytes, ...] = ()) -> DeviceRoots:
        emulated: set[str] = set()
        for der in insecure_emulated:
            try:
                cert = x509.load_der_x509_certificate(der)
            except ValueError:
                continue
            key = cert.public_key()
            if cert.issuer != cert.subject or not isinstance(key, ec.EllipticCurvePublicKey):
                continue  # not a device root (e.g. an emulated AMD ARK, RSA)
            if key.curve.name != "secp384r1":
                continue
            emulated.add(hashlib.sha256(der).hexdigest())
        return cls(frozenset({NVIDIA_DEVICE_ROOT_SHA256}) | emulated, frozenset(emulated))


@dataclass(frozen=True, slots=True)
class DeviceChain:
    """What a verified chain yields."""

    leaf_key: ec.EllipticCurvePublicKey
    fwid: bytes
    root_sha256: str
    emulated: bool
    not_before: _dt.datetime
    not_after: _dt.datetime
    certs_der: tuple[bytes, ...] = ()


def load_chain(pem: bytes, max_len: int) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise _fail(f"not a PEM certificate list ({exc})", "nvidia.chain_malformed") from exc
    if len(certs) > max_len:
        raise _fail(f"{len(certs)} certificates (limit {max_len})", "nvidia.chain_too_long")
    return certs


def leaf_fwid(leaf: x509.Certificate) -> bytes:
    """(c3) Last 48 bytes of the leaf's DICE TcbInfo extension (upstream ``get_fwid_from_cert``)."""
    try:
        ext = leaf.extensions.get_extension_for_oid(OID_DICE_TCB_INFO)
    except x509.ExtensionNotFound:
        raise _fail(
            "FwId oid not found in the NVIDIA signing certificate", "nvidia.fwid_missing"
        ) from None
    value = ext.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    if len(raw) < FWID_SIZE:
        raise _fail("unexpected FWID extension size", "nvidia.fwid_missing")
    return raw[-FWID_SIZE:]


def _issued(child: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    try:
        child.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise _fail(
            f"{what} ({exc or 'invalid signature'}); the chain failed to verify",
            "nvidia.chain_signature",
        ) from exc
    try:
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return
    if not bc.ca:
        raise _fail(f"{what}: the issuer is not a CA", "nvidia.chain_signature")


def verify_device_chain(
    pem: bytes, roots: DeviceRoots, *, max_len: int = DEFAULT_MAX_CHAIN_LEN
) -> DeviceChain:
    """Steps (c1)-(c5) except the validity time (see ``DeviceChainCache.verify``)."""
    certs = load_chain(pem, max_len)
    # (c1)
    if len(certs) < 2:
        raise _fail("must have at least the root CA and signing certificates", "nvidia.chain_short")
    # (c2)
    root = certs[-1]
    root_fp = hashlib.sha256(root.public_bytes(Encoding.DER)).hexdigest()
    if root_fp not in roots.pinned:
        raise _fail(
            f"root {root_fp[:16]}... is not NVIDIA's device identity root",
            "nvidia.root_not_pinned",
            fix="the chain must end in NVIDIA Device Identity CA (or an insecure_emulated_roots "
            "entry for tests)",
        )
    # (c3)
    fwid = leaf_fwid(certs[0])
    # (c4)
    _issued(root, root, "the root is not self-signed")
    for i in range(len(certs) - 1):
        _issued(certs[i], certs[i + 1], f"certificate {i} is not issued by certificate {i + 1}")
    # (c5)
    key = certs[0].public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise _fail("the signing key is not ECDSA P-384", "nvidia.leaf_key")
    return DeviceChain(
        leaf_key=key,
        fwid=fwid,
        root_sha256=root_fp,
        emulated=root_fp in roots.emulated,
        not_before=max(c.not_valid_before_utc for c in certs),
        not_after=min(c.not_valid_after_utc for c in certs),
        certs_der=tuple(c.public_bytes(Encoding.DER) for c in certs),
    )


class DeviceChainCache:
    """Bounded LRU of verified chains; every call checks the validity window at ``now``."""

    def __init__(self, max_entries: int = DEFAULT_CHAIN_CACHE_SIZE) -> None:
        self._max = max_entries
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[bytes, DeviceRoots], DeviceChain] = OrderedDict()

    def verify(
        self,
        pem: bytes,
        roots: DeviceRoots,
        now: _dt.datetime,
        *,
        max_len: int = DEFAULT_MAX_CHAIN_LEN,
    ) -> DeviceChain:
        key = (hashlib.sha256(pem).digest(), roots)
        with self._lock:
            chain = self._items.get(key)
            if chain is not None:
                self._items.move_to_end(key)
        if chain is None:
            chain = verify_device_chain(pem, roots, max_len=max_len)
            with self._lock:
                self._items[key] = chain
                while len(self._items) > self._max:
                    self._items.popitem(last=False)
        # (c4) validity at now
        if not chain.not_before <= now <= chain.not_after:
            raise _fail(
                f"not valid at {now.isoformat()} (valid {chain.not_before.isoformat()} .. "
                f"{chain.not_after.isoformat()})",
                "nvidia.chain_validity",
            )
        return chain

    def __len__(self) -> int:
        return len(self._items)
