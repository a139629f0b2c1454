"""The emulated paravisor's report builders: var_data JSON, signed SNP report, HCL report.

The byte layouts are the pure formats (``trustpod.evidence.snp.SnpReport``,
``trustpod.evidence.hcl.HclReport``); this module only chooses the values an Azure paravisor
would put there and signs the SNP report (ECDSA P-384 / SHA-384 over ``signed_bytes()``) with the
emulated VCEK.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from trustpod.errors import ConfigError
from trustpod.evidence.hcl import REPORT_TYPE_SNP, HclReport
from trustpod.evidence.snp import SnpReport, SnpTcb
from trustpod.guest.emulator.vendor import EmulatedTcb, EmulatedVendor

__all__ = [
    "AZURE_HCL_VERSION",
    "build_hcl_report",
    "build_snp_report",
    "build_var_data",
    "hcl_used_size",
]

_SNP_REPORT_VERSION = 3
_SIG_ALGO_ECDSA_P384_SHA384 = 1
#: report v3 CPUID fields (family, model, stepping): Milan 19h/01h, Genoa 19h/11h.
_CPUID = {"Milan": (0x19, 0x01, 0x01), "Genoa": (0x19, 0x11, 0x01)}
#: SNP firmware version reported as current/committed (major, minor, build).
_FW_VERSION = (1, 55, 0)

#: The HCL header version Azure's paravisor writes (real 2600-byte report in the vectors: 1).
AZURE_HCL_VERSION = 1
_USER_DATA_SIZE = 64


def _tcb(tcb: EmulatedTcb) -> SnpTcb:
    return SnpTcb(bootloader=tcb.bootloader, tee=tcb.tee, snp=tcb.snp, microcode=tcb.microcode)


def build_snp_report(
    vendor: EmulatedVendor,
    *,
    report_data: bytes,
    measurement: bytes,
    policy: int,
    host_data: bytes,
    guest_svn: int = 0,
    platform_info: int = 0,
    report_id: bytes = bytes(32),
    vmpl: int = 0,
) -> bytes:
    """A v3 SNP report (``trustpod.evidence.snp.SnpReport``) signed by the emulated VCEK."""
    tcb = _tcb(vendor.tcb)
    fam, mod, step = _CPUID.get(vendor.product, _CPUID["Milan"])
    report = SnpReport.build(
        version=_SNP_REPORT_VERSION,
        guest_svn=guest_svn,
        policy=policy,
        vmpl=vmpl,
        sig_algo=_SIG_ALGO_ECDSA_P384_SHA384,
        current_tcb=tcb,
        reported_tcb=tcb,
        committed_tcb=tcb,
        launch_tcb=tcb,
        platform_info=platform_info,
        report_data=report_data,
        measurement=measurement,
        host_data=host_data,
        report_id=report_id,
        chip_id=vendor.chip_id,
        cpuid_fam_id=fam,
        cpuid_mod_id=mod,
        cpuid_step=step,
        current_version=_FW_VERSION,
        committed_version=_FW_VERSION,
    )
    der = vendor.vcek_key.sign(report.signed_bytes(), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    return report.with_signature(r, s).to_bytes()


def _b64url(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def build_var_data(ak: Any, user_data: bytes, vm_configuration: dict[str, Any]) -> bytes:
    """Azure's var_data JSON: ``{"keys": [AK JWK "HCLAkPub"], "vm-configuration": {...},
    "user-data": HEX(64 bytes, upper case)}`` (compact, in this key order)."""
    if not isinstance(ak, rsa.RSAPublicKey):
        raise ConfigError("the vTPM AK must be an RSA key", reason="emulator.ak")
    if len(user_data) != _USER_DATA_SIZE:
        raise ConfigError("HCL user data must be 64 bytes", reason="emulator.user_data")
    numbers = ak.public_numbers()
    jwk = {
        "kid": "HCLAkPub",
        "key_ops": ["sign"],
        "kty": "RSA",
        "e": _b64url(numbers.e),
        "n": _b64url(numbers.n),
    }
    doc = {
        "keys": [jwk],
        "vm-configuration": vm_configuration,
        "user-data": user_data.hex().upper(),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def build_hcl_report(
    vendor: EmulatedVendor, var_data: bytes, *, vmpl: int = 0, **snp_fields: Any
) -> bytes:
    """2600-byte HCL report (``trustpod.evidence.hcl.HclReport.build``) embedding an SNP
    report bound to ``SHA-256(var_data)``."""
    report_data = hashlib.sha256(var_data).digest() + bytes(32)
    snp = build_snp_report(vendor, report_data=report_data, vmpl=vmpl, **snp_fields)
    return HclReport.build(snp, REPORT_TYPE_SNP, var_data, version=AZURE_HCL_VERSION)


def hcl_used_size(hcl: bytes) -> int:
    """``report_size`` from the HCL header: the bytes before the zero padding."""
    return HclReport.from_bytes(hcl).report_size
