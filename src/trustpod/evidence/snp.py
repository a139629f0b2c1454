"""AMD SEV-SNP attestation report (ABI ``ATTESTATION_REPORT``, 0x4A0 bytes), versions 2-5.

Layout (SEV-SNP firmware ABI spec, table "ATTESTATION_REPORT"; virtee ``sev`` crate
``firmware/guest/types/snp.rs``), all integers little-endian:

```
0x000 version u32 | 0x004 guest_svn u32 | 0x008 policy u64 | 0x010 family_id[16]
0x020 image_id[16] | 0x030 vmpl u32 | 0x034 sig_algo u32 | 0x038 current_tcb u64
0x040 platform_info u64
0x048 key_info u32 | 0x04C reserved | 0x050 report_data[64] | 0x090 measurement[48]
0x0C0 host_data[32] | 0x0E0 id_key_digest[48] | 0x110 author_key_digest[48] | 0x140 report_id[32]
0x160 report_id_ma[32] | 0x180 reported_tcb u64 | 0x188 cpuid fam/mod/step (v3+) | 0x1A0 chip_id[64]
0x1E0 committed_tcb u64 | 0x1E8 current build/minor/major | 0x1EC committed build/minor/major
0x1F0 launch_tcb u64 | 0x1F8 launch_mit_vector u64 (v5) | 0x200 current_mit_vector u64 (v5)
0x2A0 signature: r[72] | s[72] (little-endian, zero padded) | reserved[368]
```

A TCB_VERSION is ``bl, tee, 0,0,0,0, snp, ucode`` on Milan/Genoa and ``fmc, bl, tee, snp, 0,0,0,
ucode`` on Turin (chosen from CPUID family, or for v2 reports from a "Turin-like" chip_id whose
last 56 bytes are zero, as the sev crate does). The signature covers bytes 0x000-0x29F.

Serialisation keeps the reserved bytes of the report a value was parsed from (``raw``), so
``SnpReport.from_bytes(b).to_bytes() == b`` for every valid report.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from trustpod.errors import EvidenceError
from trustpod.evidence.snp_fields import SnpPlatformInfo, SnpPolicy, SnpTcb

__all__ = [
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "SnpPlatformInfo",
    "SnpPolicy",
    "SnpReport",
    "SnpTcb",
    "report_to_sev_json",
]

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SUPPORTED_VERSIONS = frozenset({2, 3, 4, 5})

OFF_VERSION = 0x000
OFF_GUEST_SVN = 0x004
OFF_POLICY = 0x008
OFF_FAMILY_ID = 0x010
OFF_IMAGE_ID = 0x020
OFF_VMPL = 0x030
OFF_SIG_ALGO = 0x034
OFF_CURRENT_TCB = 0x038
OFF_PLATFORM_INFO = 0x040
OFF_KEY_INFO = 0x048
OFF_REPORT_DATA = 0x050
OFF_MEASUREMENT = 0x090
OFF_HOST_DATA = 0x0C0
OFF_ID_KEY_DIGEST = 0x0E0
OFF_AUTHOR_KEY_DIGEST = 0x110
OFF_REPORT_ID = 0x140
OFF_REPORT_ID_MA = 0x160
OFF_REPORTED_TCB = 0x180
OFF_CPUID_FAM = 0x188
OFF_CPUID_MOD = 0x189
OFF_CPUID_STEP = 0x18A
OFF_CHIP_ID = 0x1A0
OFF_COMMITTED_TCB = 0x1E0
OFF_CURRENT_VERSION = 0x1E8
OFF_COMMITTED_VERSION = 0x1EC
OFF_LAUNCH_TCB = 0x1F0
OFF_LAUNCH_MIT = 0x1F8
OFF_CURRENT_MIT = 0x200
OFF_SIG_R = 0x2A0
OFF_SIG_S = 0x2E8
SIG_COMPONENT_SIZE = 72

#: byte fields: name -> (offset, size)
BYTE_FIELDS: dict[str, tuple[int, int]] = {
    "family_id": (OFF_FAMILY_ID, 16),
    "image_id": (OFF_IMAGE_ID, 16),
    "report_data": (OFF_REPORT_DATA, 64),
    "measurement": (OFF_MEASUREMENT, 48),
    "host_data": (OFF_HOST_DATA, 32),
    "id_key_digest": (OFF_ID_KEY_DIGEST, 48),
    "author_key_digest": (OFF_AUTHOR_KEY_DIGEST, 48),
    "report_id": (OFF_REPORT_ID, 32),
    "report_id_ma": (OFF_REPORT_ID_MA, 32),
    "chip_id": (OFF_CHIP_ID, 64),
}
TCB_FIELDS: dict[str, int] = {
    "current_tcb": OFF_CURRENT_TCB,
    "reported_tcb": OFF_REPORTED_TCB,
    "committed_tcb": OFF_COMMITTED_TCB,
    "launch_tcb": OFF_LAUNCH_TCB,
}
TURIN_FAMILY = 0x1A


def _is_turin_like_chip(chip_id: bytes) -> bool:
    return any(chip_id) and not any(chip_id[8:])


@dataclass(frozen=True, slots=True)
class SnpReport:
    """A parsed SNP attestation report. ``raw`` is the source of the reserved bytes."""

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    sig_algo: int
    current_tcb: SnpTcb
    platform_info: int
    key_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: SnpTcb
    cpuid_fam_id: int | None
    cpuid_mod_id: int | None
    cpuid_step: int | None
    chip_id: bytes
    committed_tcb: SnpTcb
    current_version: tuple[int, int, int]  # (major, minor, build)
    committed_version: tuple[int, int, int]
    launch_tcb: SnpTcb
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: bytes  # 72 bytes, little-endian
    signature_s: bytes
    raw: bytes = dataclasses.field(default=bytes(REPORT_SIZE), repr=False, compare=False)

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_bytes(cls, data: bytes) -> SnpReport:
        """Parse exactly ``REPORT_SIZE`` bytes (raise ``EvidenceError`` otherwise)."""
        if not isinstance(data, bytes | bytearray) or len(data) != REPORT_SIZE:
            size = len(data) if isinstance(data, bytes | bytearray) else "non-bytes"
            raise EvidenceError(
                f"SNP report must be {REPORT_SIZE} bytes, got {size}", reason="snp.report_size"
            )
        b = bytes(data)
        (version,) = struct.unpack_from("<I", b, OFF_VERSION)
        if version not in SUPPORTED_VERSIONS:
            raise EvidenceError(
                f"unsupported SNP report version {version} (supported: 2-5)",
                reason="snp.report_version",
            )
        v3 = version >= 3
        fam = b[OFF_CPUID_FAM] if v3 else None
        turin = (
            fam == TURIN_FAMILY if v3 else _is_turin_like_chip(b[OFF_CHIP_ID : OFF_CHIP_ID + 64])
        )
        fields: dict[str, Any] = {
            name: b[off : off + size] for name, (off, size) in BYTE_FIELDS.items()
        }
        fields.update(
            {name: SnpTcb.decode(b[off : off + 8], turin=turin) for name, off in TCB_FIELDS.items()}
        )
        cur = b[OFF_CURRENT_VERSION : OFF_CURRENT_VERSION + 3]
        com = b[OFF_COMMITTED_VERSION : OFF_COMMITTED_VERSION + 3]
        return cls(
            version=version,
            guest_svn=struct.unpack_from("<I", b, OFF_GUEST_SVN)[0],
            policy=struct.unpack_from("<Q", b, OFF_POLICY)[0],
            vmpl=struct.unpack_from("<I", b, OFF_VMPL)[0],
            sig_algo=struct.unpack_from("<I", b, OFF_SIG_ALGO)[0],
            platform_info=struct.unpack_from("<Q", b, OFF_PLATFORM_INFO)[0],
            key_info=struct.unpack_from("<I", b, OFF_KEY_INFO)[0],
            cpuid_fam_id=fam,
            cpuid_mod_id=b[OFF_CPUID_MOD] if v3 else None,
            cpuid_step=b[OFF_CPUID_STEP] if v3 else None,
            current_version=(cur[2], cur[1], cur[0]),
            committed_version=(com[2], com[1], com[0]),
            launch_mit_vector=struct.unpack_from("<Q", b, OFF_LAUNCH_MIT)[0]
            if version >= 5
            else None,
            current_mit_vector=(
                struct.unpack_from("<Q", b, OFF_CURRENT_MIT)[0] if version >= 5 else None
            ),
            signature_r=b[OFF_SIG_R : OFF_SIG_R + SIG_COMPONENT_SIZE],
            signature_s=b[OFF_SIG_S : OFF_SIG_S + SIG_COMPONENT_SIZE],
            raw=b,
            **fields,
        )

    @classmethod
    def from_json(cls, obj: Any) -> SnpReport:
        """Parse the sev crate's serde JSON of ``AttestationReport`` (see ``snp_json``)."""
        from trustpod.evidence.snp_json import report_from_sev_json

        return report_from_sev_json(obj)

    @classmethod
    def build(cls, **fields: Any) -> SnpReport:
        """A report from named fields; unnamed fields are zero (version 3 by default)."""
        zero = SnpTcb()
        defaults: dict[str, Any] = {
            "version": 3,
            "guest_svn": 0,
            "policy": 0x30000,
            "vmpl": 0,
            "sig_algo": 1,
            "current_tcb": zero,
            "platform_info": 0,
            "key_info": 0,
            "reported_tcb": zero,
            "cpuid_fam_id": None,
            "cpuid_mod_id": None,
            "cpuid_step": None,
            "committed_tcb": zero,
            "current_version": (0, 0, 0),
            "committed_version": (0, 0, 0),
            "launch_tcb": zero,
            "launch_mit_vector": None,
            "current_mit_vector": None,
            "signature_r": bytes(SIG_COMPONENT_SIZE),
            "signature_s": bytes(SIG_COMPONENT_SIZE),
        }
        defaults.update({name: bytes(size) for name, (_, size) in BYTE_FIELDS.items()})
        defaults.update(fields)
        report = cls(**defaults)
        return cls.from_bytes(report.to_bytes())  # validates sizes and ranges

    # ------------------------------------------------------------------ accessors
    @property
    def turin_layout(self) -> bool:
        if self.version >= 3:
            return self.cpuid_fam_id == TURIN_FAMILY
        return _is_turin_like_chip(self.chip_id)

    @property
    def policy_bits(self) -> SnpPolicy:
        return SnpPolicy(self.policy)

    @property
    def platform_bits(self) -> SnpPlatformInfo:
        return SnpPlatformInfo(self.platform_info)

    def replace(self, **changes: Any) -> SnpReport:
        """A copy with ``changes`` applied (re-validated)."""
        return SnpReport.from_bytes(dataclasses.replace(self, **changes).to_bytes())

    # ------------------------------------------------------------------ serialisation
    def to_bytes(self) -> bytes:
        """Serialise to the 0x4A0-byte ABI form (reserved bytes from ``raw``)."""
        try:
            return self._encode()
        except (struct.error, ValueError, TypeError) as exc:
            raise EvidenceError(
                f"SNP report field out of range: {exc}", reason="snp.build"
            ) from exc

    def _encode(self) -> bytes:
        out = bytearray(self.raw if len(self.raw) == REPORT_SIZE else bytes(REPORT_SIZE))
        struct.pack_into("<IIQ", out, OFF_VERSION, self.version, self.guest_svn, self.policy)
        struct.pack_into("<II", out, OFF_VMPL, self.vmpl, self.sig_algo)
        struct.pack_into("<QI", out, OFF_PLATFORM_INFO, self.platform_info, self.key_info)
        for name, (off, size) in BYTE_FIELDS.items():
            value = getattr(self, name)
            if len(value) != size:
                raise ValueError(f"{name} must be {size} bytes")
            out[off : off + size] = value
        turin = self.turin_layout
        for name, off in TCB_FIELDS.items():
            out[off : off + 8] = getattr(self, name).encode(turin=turin, base=out[off : off + 8])
        if self.version >= 3:
            out[OFF_CPUID_FAM] = self.cpuid_fam_id or 0
            out[OFF_CPUID_MOD] = self.cpuid_mod_id or 0
            out[OFF_CPUID_STEP] = self.cpuid_step or 0
        for off, (major, minor, build) in (
            (OFF_CURRENT_VERSION, self.current_version),
            (OFF_COMMITTED_VERSION, self.committed_version),
        ):
            out[off : off + 3] = bytes([build, minor, major])
        if self.version >= 5:
            struct.pack_into(
                "<QQ",
                out,
                OFF_LAUNCH_MIT,
                self.launch_mit_vector or 0,
                self.current_mit_vector or 0,
            )
        for off, comp in ((OFF_SIG_R, self.signature_r), (OFF_SIG_S, self.signature_s)):
            if len(comp) != SIG_COMPONENT_SIZE:
                raise ValueError(f"signature components must be {SIG_COMPONENT_SIZE} bytes")
            out[off : off + SIG_COMPONENT_SIZE] = comp
        return bytes(out)

    def signed_bytes(self) -> bytes:
        """Bytes 0x000-0x29F: what the VCEK/VLEK signs (ECDSA P-384, SHA-384)."""
        return self.to_bytes()[:SIGNED_SIZE]

    def with_signature(self, r: int, s: int) -> SnpReport:
        """A copy carrying the ECDSA signature (r, s) in the ABI's little-endian form."""
        return self.replace(
            signature_r=r.to_bytes(SIG_COMPONENT_SIZE, "little"),
            signature_s=s.to_bytes(SIG_COMPONENT_SIZE, "little"),
        )

    def signature_der(self) -> bytes:
        """The signature as a DER ``Ecdsa-Sig-Value`` for ``cryptography``."""
        r = int.from_bytes(self.signature_r, "little")
        s = int.from_bytes(self.signature_s, "little")
        return encode_dss_signature(r, s)

    def to_sev_json(self) -> dict[str, Any]:
        from trustpod.evidence.snp_json import report_to_sev_json_obj

        return report_to_sev_json_obj(self)


def report_to_sev_json(raw: bytes) -> dict[str, Any]:
    """The virtee ``sev`` crate serde JSON of a raw report (``attestation_report``)."""
    return SnpReport.from_bytes(raw).to_sev_json()
