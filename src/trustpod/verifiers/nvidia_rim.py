"""NVIDIA RIM verification (XMLDSig via signxml) and comparison with a GPU report.

Follows nvtrust's local GPU verifier (``verifier.py``, ``rim/__init__.py``, ``cc_admin.py``):

  (r1) Fetch the driver and VBIOS RIMs by id from a ``RimSource`` (offline store by default):
       ``NV_GPU_DRIVER_GH100_<driver_version>`` and
       ``NV_GPU_VBIOS_<PROJECT>_<PROJECT_SKU>_<CHIP_SKU>_<VBIOS without dots>`` (upper case).
  (r2) Parse the XML with a hardened lxml parser (no entities, no network, size limit).
  (r3) Chain: the ``X509Data`` certificates (signer first) must chain to a configured RIM root
       (``RimRoots``: certificates from the collateral store; NVIDIA's ``CoRIM signing Root CA``
       is not pinned in the package), every certificate valid at ``now``.
  (r4) Signature: enveloped XMLDSig ``ecdsa-sha384`` with ``sha384`` digests, verified by signxml
       with the chain's leaf; only the element signxml returns as signed is parsed
       (``trustpod.evidence.nvidia_rim``).
  (r5) Compare: RIM index *i* is the report's measurement block *i+1*; every active RIM
       measurement must be present and equal one of its alternatives; driver and VBIOS active
       indexes must not overlap; the RIM versions must equal the report's driver/VBIOS versions.

The outcome becomes claims in NRAS' names where the meaning is the same
(``x-nvidia-gpu-{driver,vbios}-rim-{fetched,signature-verified,version-match,
measurements-available}``, ``measres``) plus ``x-trustpod-rim-mismatches``; a RIM that fails
(r2)-(r4) raises. No OCSP here (see docs/compat.md).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidInput, SignXMLException
from signxml.verifier import SignatureConfiguration, XMLVerifier

from trustpod.errors import EvidenceError, VerificationError
from trustpod.evidence.nvidia_rim import NvidiaRim, parse_rim

__all__ = [
    "DEFAULT_MAX_RIM_BYTES",
    "RimAppraisal",
    "RimChecker",
    "RimRoots",
    "RimSource",
    "compare_rims",
    "rim_ids",
    "verify_rim",
]

DEFAULT_MAX_RIM_BYTES = 1024 * 1024
_DS = "{http://www.w3.org/2000/09/xmldsig#}"
_EXPECT = SignatureConfiguration(
    signature_methods=frozenset({SignatureMethod.ECDSA_SHA384}),
    digest_algorithms=frozenset({DigestAlgorithm.SHA384}),
)


class RimSource(Protocol):
    """Port: the RIM XML for an id, or ``None`` when the store does not have it."""

    def rim(self, rim_id: str) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class RimRoots:
    """Trusted RIM signing roots (DER)."""

    roots: tuple[bytes, ...]

    def certificates(self) -> list[x509.Certificate]:
        return [x509.load_der_x509_certificate(d) for d in self.roots]


def rim_ids(config: dict[str, Any]) -> tuple[str, str]:
    """(r1) Driver and VBIOS RIM ids for a Hopper report's ``config`` claims."""
    try:
        driver = str(config["driver_version"])
        vbios = str(config["vbios_version"]).replace(".", "").upper()
        parts = [str(config[k]).upper() for k in ("project", "project_sku", "chip_sku")]
    except KeyError as exc:
        raise VerificationError(
            f"NVIDIA report lacks {exc.args[0]} needed to name its RIM", reason="nvidia.rim_id"
        ) from None
    return f"NV_GPU_DRIVER_GH100_{driver}", "NV_GPU_VBIOS_" + "_".join([*parts, vbios])


def _parse_xml(data: bytes, max_bytes: int) -> Any:
    if len(data) > max_bytes:
        raise EvidenceError(
            f"RIM is {len(data)} bytes (limit {max_bytes})", reason="nvidia.rim_malformed"
        )
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False
    )
    try:
        root = etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise EvidenceError(f"RIM is not XML: {exc}", reason="nvidia.rim_malformed") from exc
    if root.getroottree().docinfo.doctype:
        raise EvidenceError("RIM must not carry a DOCTYPE", reason="nvidia.rim_malformed")
    return root


def _fail(msg: str, reason: str = "nvidia.rim_chain") -> VerificationError:
    return VerificationError(f"NVIDIA RIM: {msg}", reason=reason)


def _chain(root_el: Any, roots: RimRoots, now: _dt.datetime) -> x509.Certificate:
    """(r3) Returns the signer certificate."""
    texts = [e.text or "" for e in root_el.iter(f"{_DS}X509Certificate")]
    if not texts:
        raise _fail("the signature carries no X509Data certificate")
    try:
        import base64

        certs = [
            x509.load_der_x509_certificate(base64.b64decode("".join(t.split()))) for t in texts
        ]
    except ValueError as exc:
        raise _fail(f"bad X509Certificate ({exc})") from exc
    anchors = roots.certificates()
    anchor_ders = {a.public_bytes(Encoding.DER) for a in anchors}
    chain = [c for c in certs if c.public_bytes(Encoding.DER) not in anchor_ders]
    if not chain:
        raise _fail("the signature carries only root certificates")
    for child, issuer in itertools.pairwise(chain):
        try:
            child.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise _fail(
                f"{child.subject.rfc4514_string()} is not issued by the next certificate"
            ) from exc
    top = chain[-1]
    for anchor in anchors:
        try:
            top.verify_directly_issued_by(anchor)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            continue
        break
    else:
        raise _fail("the RIM chain does not end at a trusted RIM root", "nvidia.rim_root")
    for c in [*chain, anchor]:
        if not c.not_valid_before_utc <= now <= c.not_valid_after_utc:
            raise _fail(
                f"{c.subject.rfc4514_string()} is not valid at {now.isoformat()}",
                "nvidia.rim_validity",
            )
    return chain[0]


def verify_rim(
    data: bytes, roots: RimRoots, now: _dt.datetime, *, max_bytes: int = DEFAULT_MAX_RIM_BYTES
) -> NvidiaRim:
    """(r2)-(r4): a signed, trusted RIM, parsed from its signed content only."""
    root_el = _parse_xml(data, max_bytes)
    signer = _chain(root_el, roots, now)
    try:
        result = XMLVerifier().verify(root_el, x509_cert=signer, expect_config=_EXPECT)
    except (InvalidInput, SignXMLException, InvalidSignature, ValueError) as exc:
        raise _fail(f"XML signature verification failed ({exc})", "nvidia.rim_signature") from exc
    signed = result.signed_xml if not isinstance(result, list) else None
    if signed is None:
        raise _fail("expected exactly one signed reference", "nvidia.rim_signature")
    return parse_rim(signed)


@dataclass(frozen=True, slots=True)
class RimAppraisal:
    """(r5) outcome."""

    driver_version_match: bool
    vbios_version_match: bool
    mismatches: tuple[int, ...]  # SPDM block indexes
    missing: tuple[int, ...]

    @property
    def success(self) -> bool:
        return (
            self.driver_version_match
            and self.vbios_version_match
            and not self.mismatches
            and not self.missing
        )


def compare_rims(
    driver: NvidiaRim, vbios: NvidiaRim, measurements: dict[str, str], config: dict[str, Any]
) -> RimAppraisal:
    """(r5) Compare the report's measurements and versions with both RIMs."""
    d, v = driver.active(), vbios.active()
    overlap = sorted(set(d) & set(v))
    if overlap:
        raise VerificationError(
            f"driver and VBIOS RIMs both set measurements {overlap}", reason="nvidia.rim_overlap"
        )
    mismatches, missing = [], []
    for rim_index, values in sorted({**d, **v}.items()):
        spdm = rim_index + 1
        got = measurements.get(str(spdm))
        if got is None:
            missing.append(spdm)
        elif bytes.fromhex(got) not in values:
            mismatches.append(spdm)
    return RimAppraisal(
        driver_version_match=driver.version.lower()
        == str(config.get("driver_version", "")).lower(),
        vbios_version_match=vbios.version.lower() == str(config.get("vbios_version", "")).lower(),
        mismatches=tuple(mismatches),
        missing=tuple(missing),
    )


class RimChecker:
    """(r1)-(r5) for one report; verified RIMs cached by digest (bounded LRU)."""

    def __init__(
        self,
        source: RimSource,
        roots: RimRoots,
        *,
        max_bytes: int = DEFAULT_MAX_RIM_BYTES,
        cache_size: int = 64,
    ) -> None:
        self._source, self._roots, self._max = source, roots, max_bytes
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[bytes, _dt.date], NvidiaRim] = OrderedDict()
        self._size = cache_size

    def _verified(self, data: bytes, now: _dt.datetime) -> NvidiaRim:
        key = (hashlib.sha256(data).digest(), now.date())
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        rim = verify_rim(data, self._roots, now, max_bytes=self._max)
        with self._lock:
            self._cache[key] = rim
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return rim

    def claims(
        self, measurements: dict[str, str], config: dict[str, Any], now: _dt.datetime
    ) -> dict[str, Any]:
        driver_id, vbios_id = rim_ids(config)
        driver_xml, vbios_xml = self._source.rim(driver_id), self._source.rim(vbios_id)
        out: dict[str, Any] = {
            "x-nvidia-gpu-driver-rim-fetched": driver_xml is not None,
            "x-nvidia-gpu-vbios-rim-fetched": vbios_xml is not None,
        }
        if driver_xml is None or vbios_xml is None:
            out["measres"] = "fail"
            return out
        driver, vbios = self._verified(driver_xml, now), self._verified(vbios_xml, now)
        result = compare_rims(driver, vbios, measurements, config)
        for kind, rim, match in (
            ("driver", driver, result.driver_version_match),
            ("vbios", vbios, result.vbios_version_match),
        ):
            out[f"x-nvidia-gpu-{kind}-rim-signature-verified"] = True
            out[f"x-nvidia-gpu-{kind}-rim-version-match"] = match
            out[f"x-nvidia-gpu-{kind}-rim-measurements-available"] = bool(rim.active())
        out["measres"] = "success" if result.success else "fail"
        out["x-trustpod-rim-mismatches"] = list(result.mismatches + result.missing)
        return out
