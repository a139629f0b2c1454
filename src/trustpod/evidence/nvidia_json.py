"""NVIDIA device evidence JSON (the ``nvidia`` TEE's evidence value).

Upstream: ``deps/verifier/src/nvidia/mod.rs`` (``NvDeviceEvidence``) and the attester
``gc:attestation-agent/attester/src/nvidia/nvat.rs``::

    {"device_evidence_list": [{"arch": "HOPPER"|"BLACKWELL"|"LS10",   (case-insensitive)
                               "uuid": "GPU-..."                       (optional, "unknown")
                               "evidence": "<hex, else standard base64, of request||response>",
                               "certificate": "<standard base64 of the PEM chain text>"}]}

Each device is parsed once into ``NvidiaDeviceEvidence``; the report bytes are parsed by
``trustpod.evidence.nvidia_spdm``. Count and size limits are arguments (named settings).
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Any

from trustpod._internal.b64 import b64_decode
from trustpod.errors import EvidenceError

__all__ = [
    "ARCHES",
    "DEFAULT_MAX_DEVICES",
    "NvidiaDeviceEvidence",
    "parse_device_list",
]

#: Upper-case wire name -> upstream's claim spelling (strum ``Display`` of ``Architecture``).
ARCHES = {"HOPPER": "Hopper", "BLACKWELL": "Blackwell", "LS10": "LS10"}
#: An 8-GPU + 4-switch PPCIE node is the largest known topology.
DEFAULT_MAX_DEVICES = 16


def _bad(msg: str) -> EvidenceError:
    return EvidenceError(f"NVIDIA evidence: {msg}", reason="nvidia.malformed")


@dataclass(frozen=True, slots=True)
class NvidiaDeviceEvidence:
    """One device's evidence: architecture (claim spelling), uuid, report bytes, PEM chain."""

    arch: str
    uuid: str
    report: bytes
    chain_pem: bytes

    @property
    def tee_class(self) -> str:
        """``gpu`` for GPUs, ``switch`` for LS10 NVSwitches (upstream)."""
        return "switch" if self.arch == "LS10" else "gpu"

    @classmethod
    def parse(cls, item: Any, *, max_bytes: int) -> NvidiaDeviceEvidence:
        if not isinstance(item, dict):
            raise _bad("each device evidence must be a JSON object")
        arch, uuid = item.get("arch"), item.get("uuid", "unknown")
        evidence, certificate = item.get("evidence"), item.get("certificate")
        if not isinstance(arch, str) or arch.upper() not in ARCHES:
            raise _bad(f"unknown arch {arch!r}; expected one of {', '.join(ARCHES)}")
        if not isinstance(uuid, str):
            raise _bad("uuid must be a string")
        if not isinstance(evidence, str) or not isinstance(certificate, str):
            raise _bad("evidence and certificate must be strings")
        if len(evidence) + len(certificate) > 2 * max_bytes:
            raise EvidenceError("NVIDIA evidence is too large", reason="nvidia.too_large")
        # upstream: hex first, else base64
        try:
            report = binascii.unhexlify(evidence.strip())
        except (binascii.Error, ValueError):
            report = b64_decode(evidence, field="NVIDIA evidence")
        chain = b64_decode(certificate, field="NVIDIA certificate")
        return cls(ARCHES[arch.upper()], uuid, report, chain)


def parse_device_list(
    evidence: Any, *, max_bytes: int, max_devices: int = DEFAULT_MAX_DEVICES
) -> tuple[NvidiaDeviceEvidence, ...]:
    """``{"device_evidence_list": [...]}`` -> devices (at least one, at most ``max_devices``)."""
    if not isinstance(evidence, dict):
        raise _bad("evidence must be a JSON object")
    items = evidence.get("device_evidence_list")
    if not isinstance(items, list):
        raise _bad("device_evidence_list must be a list")
    if not items:
        raise _bad("device_evidence_list is empty")
    if len(items) > max_devices:
        raise EvidenceError(
            f"NVIDIA evidence lists {len(items)} devices (limit {max_devices})",
            reason="nvidia.too_many_devices",
        )
    return tuple(NvidiaDeviceEvidence.parse(i, max_bytes=max_bytes) for i in items)
