"""The virtee ``sev`` crate's serde JSON for SNP reports and the ``snp`` evidence envelope.

``snp`` evidence (trustee ``deps/verifier/src/snp/mod.rs`` ``SnpEvidence``)::

    {"attestation_report": {...AttestationReport serde...},
     "cert_chain": [{"cert_type": "ARK"|"ASK"|"VCEK"|"VLEK"|..., "data": [u8, ...]}] | null}

Byte arrays are JSON arrays of integers; ``policy``/``plat_info``/``key_info`` are integers;
TCB versions are ``{"fmc", "bootloader", "tee", "snp", "microcode"}``; versions are
``{"major", "minor", "build"}``; the signature is ``{"r": [72], "s": [72]}``. Reserved bytes are
not in the JSON, so a report rebuilt from it has zeroed reserved regions (as upstream rebuilds it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trustpod.errors import EvidenceError
from trustpod.evidence.snp import (
    BYTE_FIELDS,
    SIG_COMPONENT_SIZE,
    TCB_FIELDS,
    SnpReport,
    SnpTcb,
)

__all__ = [
    "CertTableEntry",
    "SnpEvidence",
    "report_from_sev_json",
    "report_to_sev_json_obj",
]

MAX_CERT_BYTES = 64 * 1024
MAX_CERTS = 16


def _byte_array(value: Any, size: int | None, field: str) -> bytes:
    if not isinstance(value, list) or (size is not None and len(value) != size):
        want = f"{size} " if size is not None else ""
        raise EvidenceError(f"{field} must be an array of {want}bytes", reason="snp.json")
    try:
        return bytes(value)
    except (TypeError, ValueError) as exc:
        raise EvidenceError(f"{field} must contain integers 0..255", reason="snp.json") from exc


def _int(obj: dict[str, Any], key: str, limit: int, *, optional: bool = False) -> int | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise EvidenceError(f"attestation_report.{key} is not an integer", reason="snp.json")
    return value


def _version(obj: Any, field: str) -> tuple[int, int, int]:
    if not isinstance(obj, dict):
        raise EvidenceError(f"{field} is not an object", reason="snp.json")
    parts = [_int(obj, k, 0xFF) for k in ("major", "minor", "build")]
    return (int(parts[0] or 0), int(parts[1] or 0), int(parts[2] or 0))


def report_from_sev_json(obj: Any) -> SnpReport:
    """Rebuild a report from its sev-crate JSON (raise ``EvidenceError`` when malformed)."""
    if not isinstance(obj, dict):
        raise EvidenceError("attestation_report is not an object", reason="snp.json")
    sig = obj.get("signature")
    if not isinstance(sig, dict):
        raise EvidenceError("attestation_report.signature is not an object", reason="snp.json")
    fields: dict[str, Any] = {
        name: _byte_array(obj.get(name), size, f"attestation_report.{name}")
        for name, (_, size) in BYTE_FIELDS.items()
    }
    fields.update(
        {name: SnpTcb.from_json(obj.get(name), f"attestation_report.{name}") for name in TCB_FIELDS}
    )
    u32, u64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
    report = SnpReport(
        version=int(_int(obj, "version", u32) or 0),
        guest_svn=int(_int(obj, "guest_svn", u32) or 0),
        policy=int(_int(obj, "policy", u64) or 0),
        vmpl=int(_int(obj, "vmpl", u32) or 0),
        sig_algo=int(_int(obj, "sig_algo", u32) or 0),
        platform_info=int(_int(obj, "plat_info", u64) or 0),
        key_info=int(_int(obj, "key_info", u32) or 0),
        cpuid_fam_id=_int(obj, "cpuid_fam_id", 0xFF, optional=True),
        cpuid_mod_id=_int(obj, "cpuid_mod_id", 0xFF, optional=True),
        cpuid_step=_int(obj, "cpuid_step", 0xFF, optional=True),
        current_version=_version(obj.get("current"), "attestation_report.current"),
        committed_version=_version(obj.get("committed"), "attestation_report.committed"),
        launch_mit_vector=_int(obj, "launch_mit_vector", u64, optional=True),
        current_mit_vector=_int(obj, "current_mit_vector", u64, optional=True),
        signature_r=_byte_array(sig.get("r"), SIG_COMPONENT_SIZE, "signature.r"),
        signature_s=_byte_array(sig.get("s"), SIG_COMPONENT_SIZE, "signature.s"),
        **fields,
    )
    return SnpReport.from_bytes(report.to_bytes())


def report_to_sev_json_obj(report: SnpReport) -> dict[str, Any]:
    """The sev-crate JSON of ``report`` (field order as the crate serialises it)."""

    def ver(v: tuple[int, int, int]) -> dict[str, int]:
        return {"major": v[0], "minor": v[1], "build": v[2]}

    out: dict[str, Any] = {
        "version": report.version,
        "guest_svn": report.guest_svn,
        "policy": report.policy,
        "family_id": list(report.family_id),
        "image_id": list(report.image_id),
        "vmpl": report.vmpl,
        "sig_algo": report.sig_algo,
        "current_tcb": report.current_tcb.to_json(),
        "plat_info": report.platform_info,
        "key_info": report.key_info,
    }
    for name in ("report_data", "measurement", "host_data", "id_key_digest"):
        out[name] = list(getattr(report, name))
    for name in ("author_key_digest", "report_id", "report_id_ma"):
        out[name] = list(getattr(report, name))
    out.update(
        {
            "reported_tcb": report.reported_tcb.to_json(),
            "cpuid_fam_id": report.cpuid_fam_id,
            "cpuid_mod_id": report.cpuid_mod_id,
            "cpuid_step": report.cpuid_step,
            "chip_id": list(report.chip_id),
            "committed_tcb": report.committed_tcb.to_json(),
            "current": ver(report.current_version),
            "committed": ver(report.committed_version),
            "launch_tcb": report.launch_tcb.to_json(),
            "launch_mit_vector": report.launch_mit_vector,
            "current_mit_vector": report.current_mit_vector,
            "signature": {"r": list(report.signature_r), "s": list(report.signature_s)},
        }
    )
    return out


@dataclass(frozen=True, slots=True)
class CertTableEntry:
    """One entry of the extended-report certificate table (sev ``CertTableEntry``)."""

    cert_type: str  # "ARK" | "ASK" | "VCEK" | "VLEK" | other
    data: bytes


@dataclass(frozen=True, slots=True)
class SnpEvidence:
    """``snp`` evidence: the report plus the optional certificate table."""

    report: SnpReport
    cert_chain: tuple[CertTableEntry, ...] | None

    @classmethod
    def from_json(cls, obj: Any) -> SnpEvidence:
        if not isinstance(obj, dict) or "attestation_report" not in obj:
            raise EvidenceError(
                "snp evidence must be an object with attestation_report", reason="snp.json"
            )
        report = report_from_sev_json(obj["attestation_report"])
        chain = obj.get("cert_chain")
        if chain is None:
            return cls(report, None)
        if not isinstance(chain, list) or len(chain) > MAX_CERTS:
            raise EvidenceError("cert_chain must be a short array", reason="snp.json")
        entries = []
        for i, entry in enumerate(chain):
            if not isinstance(entry, dict) or not isinstance(entry.get("cert_type"), str | dict):
                raise EvidenceError(f"cert_chain[{i}] is malformed", reason="snp.json")
            data = entry.get("data")
            if not isinstance(data, list) or len(data) > MAX_CERT_BYTES:
                raise EvidenceError(f"cert_chain[{i}].data is malformed", reason="snp.json")
            ctype = entry["cert_type"]
            entries.append(
                CertTableEntry(
                    ctype if isinstance(ctype, str) else "OTHER",
                    _byte_array(data, None, f"cert_chain[{i}].data"),
                )
            )
        return cls(report, tuple(entries))

    def to_json(self) -> dict[str, Any]:
        return {
            "attestation_report": report_to_sev_json_obj(self.report),
            "cert_chain": None
            if self.cert_chain is None
            else [{"cert_type": e.cert_type, "data": list(e.data)} for e in self.cert_chain],
        }
