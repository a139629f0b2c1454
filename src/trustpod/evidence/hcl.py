"""Azure HCL (host compatibility layer) report, read from vTPM NV index 0x01400001.

Layout (kinvolk/azure-cvm-tooling ``az-cvm-vtpm/src/hcl/mod.rs``; OpenHCL IGVM attest protocol),
little-endian, 2600 bytes in all:

```
0x000 header: signature u32 ("HCLA" = 0x414C4348) | version u32 | report_size u32
              | request_type u32 | status u32 | reserved u32 x3
0x020 hw_report[1184]: the SEV-SNP report, or the 1024-byte TDX TD report zero padded
0x4C0 IgvmRequestData: data_size u32 | version u32 | report_type u32 (2 SNP, 4 TDX)
              | report_data_hash_type u32 (1 SHA-256) | variable_data_size u32
0x4D4 variable_data[variable_data_size]: JSON {"keys":[JWK kid "HCLAkPub", ...],
              "vm-configuration":{...}, "user-data": hex}
```

The hardware report's report_data[0..32] is SHA-256(variable_data).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from trustpod._internal.b64 import b64url_decode
from trustpod.errors import EvidenceError
from trustpod.evidence.snp import REPORT_SIZE as SNP_REPORT_SIZE
from trustpod.evidence.snp import SnpReport

__all__ = [
    "HCL_AKPUB_KID",
    "HCL_REPORT_SIZE",
    "REPORT_TYPE_SNP",
    "REPORT_TYPE_TDX",
    "TD_REPORT_SIZE",
    "HclReport",
]

HCL_REPORT_SIZE = 2600
HCL_SIGNATURE = 0x414C4348
HCL_VERSION = 2
HCL_REQUEST_TYPE = 2
HEADER_SIZE = 0x20
OFF_HW_REPORT = HEADER_SIZE
HW_REPORT_AREA = SNP_REPORT_SIZE
OFF_REQUEST_DATA = OFF_HW_REPORT + HW_REPORT_AREA  # 0x4C0
REQUEST_DATA_HEADER = 20
OFF_VAR_DATA = OFF_REQUEST_DATA + REQUEST_DATA_HEADER  # 0x4D4
MAX_VAR_DATA = HCL_REPORT_SIZE - OFF_VAR_DATA
TD_REPORT_SIZE = 1024
REPORT_TYPE_SNP = 2
REPORT_TYPE_TDX = 4
HASH_SHA256 = 1
HCL_AKPUB_KID = "HCLAkPub"


@dataclass(frozen=True, slots=True)
class HclReport:
    """A parsed HCL report. ``hw_report`` is the full 1184-byte hardware report area."""

    signature: int
    version: int
    report_size: int
    request_type: int
    status: int
    hw_report: bytes
    data_size: int
    request_version: int
    report_type: int
    hash_type: int
    var_data: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> HclReport:
        """Parse a 2600-byte HCL report (shorter input, unknown report type → ``EvidenceError``)."""
        if len(data) != HCL_REPORT_SIZE:
            raise EvidenceError(
                f"HCL report must be {HCL_REPORT_SIZE} bytes, got {len(data)}",
                reason="hcl.size",
            )
        b = bytes(data)
        sig, ver, rsize, rtype, status = struct.unpack_from("<5I", b, 0)
        dsize, rver, report_type, hash_type, vsize = struct.unpack_from("<5I", b, OFF_REQUEST_DATA)
        if report_type not in (REPORT_TYPE_SNP, REPORT_TYPE_TDX):
            raise EvidenceError(
                f"HCL report type {report_type} is neither SNP (2) nor TDX (4)",
                reason="hcl.report_type",
            )
        if vsize > MAX_VAR_DATA:
            raise EvidenceError("HCL variable data size exceeds the report", reason="hcl.var_data")
        return cls(
            signature=sig,
            version=ver,
            report_size=rsize,
            request_type=rtype,
            status=status,
            hw_report=b[OFF_HW_REPORT:OFF_REQUEST_DATA],
            data_size=dsize,
            request_version=rver,
            report_type=report_type,
            hash_type=hash_type,
            var_data=b[OFF_VAR_DATA : OFF_VAR_DATA + vsize],
        )

    @staticmethod
    def build(
        hw_report: bytes, report_type: int, var_data: bytes, *, version: int = HCL_VERSION
    ) -> bytes:
        """Assemble a 2600-byte HCL report as the Azure paravisor lays it out."""
        if report_type == REPORT_TYPE_SNP:
            want = SNP_REPORT_SIZE
        elif report_type == REPORT_TYPE_TDX:
            want = TD_REPORT_SIZE
        else:
            raise EvidenceError(f"unknown HCL report type {report_type}", reason="hcl.report_type")
        if len(hw_report) != want:
            raise EvidenceError(f"hardware report must be {want} bytes", reason="hcl.build")
        if len(var_data) > MAX_VAR_DATA:
            raise EvidenceError(f"var_data exceeds {MAX_VAR_DATA} bytes", reason="hcl.build")
        out = bytearray(HCL_REPORT_SIZE)
        report_size = OFF_VAR_DATA + len(var_data)
        struct.pack_into("<5I", out, 0, HCL_SIGNATURE, version, report_size, HCL_REQUEST_TYPE, 0)
        out[OFF_HW_REPORT : OFF_HW_REPORT + want] = hw_report
        struct.pack_into(
            "<5I",
            out,
            OFF_REQUEST_DATA,
            REQUEST_DATA_HEADER + len(var_data),
            1,
            report_type,
            HASH_SHA256,
            len(var_data),
        )
        out[OFF_VAR_DATA : OFF_VAR_DATA + len(var_data)] = var_data
        return bytes(out)

    # ------------------------------------------------------------------ contents
    @property
    def is_snp(self) -> bool:
        return self.report_type == REPORT_TYPE_SNP

    def snp_report(self) -> SnpReport:
        if not self.is_snp:
            raise EvidenceError("HCL report does not carry an SNP report", reason="hcl.report_type")
        return SnpReport.from_bytes(self.hw_report)

    def td_report(self) -> bytes:
        """The 1024-byte TDX TD report (TDREPORT_STRUCT) inside the hardware area."""
        if self.report_type != REPORT_TYPE_TDX:
            raise EvidenceError("HCL report does not carry a TD report", reason="hcl.report_type")
        return self.hw_report[:TD_REPORT_SIZE]

    def var_data_sha256(self) -> bytes:
        if self.hash_type != HASH_SHA256:
            raise EvidenceError(
                f"HCL report_data hash type {self.hash_type} is not SHA-256 (1)",
                reason="hcl.hash_type",
            )
        return hashlib.sha256(self.var_data).digest()

    def var_data_json(self) -> dict[str, Any]:
        try:
            obj = json.loads(self.var_data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EvidenceError("HCL variable data is not JSON", reason="hcl.var_data") from exc
        if not isinstance(obj, dict):
            raise EvidenceError("HCL variable data is not a JSON object", reason="hcl.var_data")
        return obj

    def ak_jwk(self) -> dict[str, Any]:
        keys = self.var_data_json().get("keys")
        if isinstance(keys, list):
            for key in keys:
                if isinstance(key, dict) and key.get("kid") == HCL_AKPUB_KID:
                    return key
        raise EvidenceError("no HCLAkPub key in the HCL variable data", reason="hcl.ak_missing")

    def ak_public_key(self) -> rsa.RSAPublicKey:
        """The vTPM attestation key (RSA JWK ``HCLAkPub``) as a ``cryptography`` key."""
        jwk = self.ak_jwk()
        n, e = jwk.get("n"), jwk.get("e")
        if jwk.get("kty") != "RSA" or not isinstance(n, str) or not isinstance(e, str):
            raise EvidenceError("HCLAkPub is not an RSA JWK", reason="hcl.ak_invalid")
        try:
            numbers = rsa.RSAPublicNumbers(
                int.from_bytes(b64url_decode(e, field="HCLAkPub.e"), "big"),
                int.from_bytes(b64url_decode(n, field="HCLAkPub.n"), "big"),
            )
            return numbers.public_key()
        except ValueError as exc:
            raise EvidenceError(f"HCLAkPub is invalid: {exc}", reason="hcl.ak_invalid") from exc

    def user_data(self) -> bytes:
        """The var_data ``user-data`` (hex in the JSON) as bytes."""
        value = self.var_data_json().get("user-data")
        if not isinstance(value, str):
            raise EvidenceError("HCL variable data has no user-data", reason="hcl.user_data")
        try:
            return bytes.fromhex(value)
        except ValueError as exc:
            raise EvidenceError("HCL user-data is not hex", reason="hcl.user_data") from exc
