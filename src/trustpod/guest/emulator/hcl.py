"""The emulated paravisor's report builders: var_data JSON, signed SNP report, HCL report.

Layouts (AMD SEV-SNP ABI spec, ATTESTATION_REPORT v3; Azure HCL report as parsed by
kinvolk/azure-cvm-tooling ``az-cvm-vtpm/src/hcl`` and checked against a real 2600-byte Azure
report): HCL = header (32: ``"HCLA"``, u32 version 1, u32 report_size, u32 request_type 2,
u32 status 0, 12 reserved) | hardware report (1184) | IGVM request data (u32 data_size,
u32 version 1, u32 report_type 2 = SNP, u32 hash_type 1 = SHA-256, u32 var_data_size) |
var_data. ``report_size`` counts everything up to the end of var_data.

The SNP report is signed with the emulated VCEK: ECDSA P-384 / SHA-384 over bytes
``0x000..0x29F``; r and s stored little-endian, zero-padded to 72 bytes each, at 0x2A0.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from trustpod.errors import ConfigError
from trustpod.guest.emulator.vendor import EmulatedTcb, EmulatedVendor

__all__ = [
    "HCL_HEADER",
    "HCL_REQUEST_HEADER",
    "SNP_REPORT_SIZE",
    "SNP_SIGNED_SIZE",
    "build_hcl_report",
    "build_snp_report",
    "build_var_data",
]

SNP_REPORT_SIZE = 0x4A0
SNP_SIGNED_SIZE = 0x2A0
_SNP_REPORT_VERSION = 3
_SIG_ALGO_ECDSA_P384_SHA384 = 1
#: Milan: family 0x19, model 0x01, stepping 0x01 (report v3 CPUID fields).
_CPUID = {"Milan": (0x19, 0x01, 0x01), "Genoa": (0x19, 0x11, 0x01)}
#: Offsets in the SNP ATTESTATION_REPORT (AMD SEV-SNP ABI, Table "ATTESTATION_REPORT").
_OFF_REPORT_DATA = 0x50
_OFF_MEASUREMENT = 0x90
_OFF_HOST_DATA = 0xC0
_OFF_REPORT_ID = 0x140
_OFF_REPORTED_TCB = 0x180
_OFF_CPUID = 0x188
_OFF_CHIP_ID = 0x1A0
_OFF_COMMITTED_TCB = 0x1E0
_OFF_CURRENT_VERSION = 0x1E8
_OFF_LAUNCH_TCB = 0x1F0
_OFF_SIGNATURE = SNP_SIGNED_SIZE
_SIG_COMPONENT = 72
_HEAD = struct.Struct("<IIQ16s16sIIQQII")  # version .. reserved (0x00..0x50)

HCL_HEADER = struct.Struct("<4sIIII12x")
HCL_REQUEST_HEADER = struct.Struct("<IIIII")
_HCL_SIGNATURE = b"HCLA"
_HCL_VERSION = 1
_HCL_REQUEST_TYPE = 2
_IGVM_VERSION = 1
_IGVM_REPORT_TYPE_SNP = 2
_IGVM_HASH_SHA256 = 1
_USER_DATA_SIZE = 64


def _tcb(tcb: EmulatedTcb) -> int:
    # TcbVersion (Milan/Genoa): bootloader @0, tee @1, reserved @2..5, snp @6, microcode @7.
    raw = bytes([tcb.bootloader, tcb.tee, 0, 0, 0, 0, tcb.snp, tcb.microcode])
    return int.from_bytes(raw, "little")


def _put(buf: bytearray, offset: int, data: bytes, size: int) -> None:
    if len(data) != size:
        raise ConfigError(f"field at 0x{offset:x} must be {size} bytes", reason="emulator.snp")
    buf[offset : offset + size] = data


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
    """A v3 SNP report signed by the emulated VCEK (1184 bytes)."""
    tcb = _tcb(vendor.tcb)
    buf = bytearray(SNP_REPORT_SIZE)
    buf[: _HEAD.size] = _HEAD.pack(
        _SNP_REPORT_VERSION,
        guest_svn,
        policy,
        bytes(16),  # family_id
        bytes(16),  # image_id
        vmpl,
        _SIG_ALGO_ECDSA_P384_SHA384,
        tcb,  # current_tcb
        platform_info,
        0,  # flags: author key disabled, chip key not masked, signing key = VCEK
        0,
    )
    _put(buf, _OFF_REPORT_DATA, report_data, 64)
    _put(buf, _OFF_MEASUREMENT, measurement, 48)
    _put(buf, _OFF_HOST_DATA, host_data, 32)
    _put(buf, _OFF_REPORT_ID, report_id, 32)
    struct.pack_into("<Q", buf, _OFF_REPORTED_TCB, tcb)
    buf[_OFF_CPUID : _OFF_CPUID + 3] = bytes(_CPUID.get(vendor.product, _CPUID["Milan"]))
    _put(buf, _OFF_CHIP_ID, vendor.chip_id, 64)
    struct.pack_into("<Q", buf, _OFF_COMMITTED_TCB, tcb)
    buf[_OFF_CURRENT_VERSION : _OFF_CURRENT_VERSION + 8] = bytes([55, 1, 1, 0, 55, 1, 1, 0])
    struct.pack_into("<Q", buf, _OFF_LAUNCH_TCB, tcb)
    der = vendor.vcek_key.sign(bytes(buf[:SNP_SIGNED_SIZE]), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    sig = r.to_bytes(_SIG_COMPONENT, "little") + s.to_bytes(_SIG_COMPONENT, "little")
    buf[_OFF_SIGNATURE : _OFF_SIGNATURE + len(sig)] = sig
    return bytes(buf)


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
    """HCL report embedding an SNP report bound to ``SHA-256(var_data)`` (unpadded)."""
    report_data = hashlib.sha256(var_data).digest() + bytes(32)
    snp = build_snp_report(vendor, report_data=report_data, vmpl=vmpl, **snp_fields)
    request = HCL_REQUEST_HEADER.pack(
        HCL_REQUEST_HEADER.size + len(var_data),
        _IGVM_VERSION,
        _IGVM_REPORT_TYPE_SNP,
        _IGVM_HASH_SHA256,
        len(var_data),
    )
    size = HCL_HEADER.size + len(snp) + len(request) + len(var_data)
    header = HCL_HEADER.pack(_HCL_SIGNATURE, _HCL_VERSION, size, _HCL_REQUEST_TYPE, 0)
    return header + snp + request + var_data
