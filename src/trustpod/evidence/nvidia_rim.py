"""NVIDIA reference integrity manifest (RIM): a TCG RIM-IM SWID tag (ISO 19770-2 XML).

Facts (nvtrust's local verifier, trustee's RVPS ``swid`` extractor)::

    <SoftwareIdentity xmlns="http://standards.iso.org/iso/19770/-2/2015/schema.xsd" name="GH100">
      <Meta colloquialVersion="96.00.74.00.1A" edition="GPU" product="GH100"
            ns1:PlatformManufacturerStr="NVIDIA Corporation" .../>
      <Payload>
        <Resource type="Measurement" index="1" active="True" alternatives="k"
                  ns2:Hash0="<sha384 hex>" ... ns2:Hash{k-1}="..." size="48"/> ...
      </Payload>
      <ds:Signature> enveloped XMLDSig, ecdsa-sha384 / sha384, X509Data chain </ds:Signature>
    </SoftwareIdentity>

``parse_rim`` reads only the element signxml returned as *signed* (the caller verifies first,
``trustpod.verifiers.nvidia_rim``), so nothing outside the signature is trusted. Exact checks:
unique indexes, ``alternatives`` hashes present, every hash ``size`` bytes of hex.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from trustpod.errors import EvidenceError

__all__ = [
    "MAX_RIM_MEASUREMENTS",
    "SWID_NS",
    "NvidiaRim",
    "RimMeasurement",
    "parse_rim",
]

SWID_NS = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
TCG_RIM_NS = "https://trustedcomputinggroup.org/resource/tcg-reference-integrity-manifest-rim-information-model/"
MAX_RIM_MEASUREMENTS = 256
_MAX_ALTERNATIVES = 64
_HASH_ATTR = re.compile(r"^Hash(\d+)$")


def _bad(msg: str) -> EvidenceError:
    return EvidenceError(f"NVIDIA RIM: {msg}", reason="nvidia.rim_malformed")


@dataclass(frozen=True, slots=True)
class RimMeasurement:
    """One ``Resource type="Measurement"``: RIM index (0-based), active flag, accepted values."""

    index: int
    active: bool
    values: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class NvidiaRim:
    """What a verified RIM says."""

    name: str
    version: str  # Meta colloquialVersion
    edition: str
    product: str
    manufacturer: str
    measurements: tuple[RimMeasurement, ...]

    def active(self) -> dict[int, tuple[bytes, ...]]:
        return {m.index: m.values for m in self.measurements if m.active}


def _local(tag: Any) -> str:
    text = str(tag)
    return text.rsplit("}", 1)[-1]


def _attr(el: Any, name: str) -> str | None:
    for key, value in el.attrib.items():
        if _local(key) == name:
            return str(value)
    return None


def _int(text: str | None, what: str) -> int:
    if text is None or not text.isdigit() or len(text) > 6:
        raise _bad(f"{what} must be a decimal integer")
    return int(text)


def _measurement(el: Any) -> RimMeasurement:
    index = _int(_attr(el, "index"), "Resource index")
    active_text = _attr(el, "active")
    if active_text not in ("True", "False", "true", "false"):
        raise _bad(f"measurement {index}: active must be True or False")
    count = _int(_attr(el, "alternatives"), "alternatives")
    size = _int(_attr(el, "size"), "size")
    if not 1 <= count <= _MAX_ALTERNATIVES:
        raise _bad(f"measurement {index}: {count} alternatives")
    hashes: dict[int, bytes] = {}
    for key, value in el.attrib.items():
        m = _HASH_ATTR.match(_local(key))
        if m is None:
            continue
        try:
            raw = bytes.fromhex(str(value))
        except ValueError:
            raise _bad(f"measurement {index}: Hash{m.group(1)} is not hex") from None
        if len(raw) != size:
            raise _bad(f"measurement {index}: Hash{m.group(1)} is not {size} bytes")
        hashes[int(m.group(1))] = raw
    if sorted(hashes) != list(range(count)):
        raise _bad(f"measurement {index}: expected Hash0..Hash{count - 1}")
    return RimMeasurement(
        index, active_text.lower() == "true", tuple(hashes[i] for i in range(count))
    )


def parse_rim(root: Any) -> NvidiaRim:
    """A verified ``SoftwareIdentity`` element (lxml) -> ``NvidiaRim``."""
    if _local(root.tag) != "SoftwareIdentity":
        raise _bad("the signed element is not a SoftwareIdentity")
    metas = [e for e in root if _local(e.tag) == "Meta"]
    payloads = [e for e in root if _local(e.tag) == "Payload"]
    if len(metas) != 1 or len(payloads) != 1:
        raise _bad("expected exactly one Meta and one Payload")
    meta = metas[0]
    resources = [
        e for e in payloads[0] if _local(e.tag) == "Resource" and _attr(e, "type") == "Measurement"
    ]
    if len(resources) > MAX_RIM_MEASUREMENTS:
        raise _bad(f"{len(resources)} measurements (limit {MAX_RIM_MEASUREMENTS})")
    measurements = tuple(_measurement(e) for e in resources)
    indexes = [m.index for m in measurements]
    if len(set(indexes)) != len(indexes):
        raise _bad("duplicate measurement index")
    return NvidiaRim(
        name=_attr(root, "name") or "",
        version=_attr(meta, "colloquialVersion") or "",
        edition=_attr(meta, "edition") or "",
        product=_attr(meta, "product") or "",
        manufacturer=_attr(meta, "PlatformManufacturerStr") or "",
        measurements=measurements,
    )
