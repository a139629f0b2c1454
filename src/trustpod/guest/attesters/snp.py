"""AMD SEV-SNP attester: configfs-tsm first, ``/dev/sev-guest`` ioctl as fallback.

Evidence (upstream ``attester/src/snp``): ``{"attestation_report": <virtee sev crate JSON of
the report>, "cert_chain": [{"cert_type": "ARK"|"ASK"|"VCEK"|"VLEK"|..., "data": [u8...]}] |
null}``. The report data (at most 64 bytes) is zero-padded to 64; VMPL 0 by default. The
certificate chain comes from the configfs-tsm ``auxblob`` (the GHCB certificate table) when the
host provides one.

``/dev/sev-guest`` ABI (``include/uapi/linux/sev-guest.h``): ``SNP_GET_REPORT =
_IOWR('S', 0x0, struct snp_guest_request_ioctl)``, ``SNP_GET_EXT_REPORT = _IOWR('S', 0x2, ...)``
with ``snp_ext_report_req = {snp_report_req; u64 certs_address; u32 certs_len}``;
``snp_guest_request_ioctl = {u8 msg_version; u64 req_data; u64 resp_data; u64 exitinfo2}``
(32 bytes with alignment);
``snp_report_req = {u8 user_data[64]; u32 vmpl; u8 rsvd[28]}``; ``snp_report_resp = {u8
data[4000]}`` where data is MSG_REPORT_RSP: ``u32 status; u32 report_size; u8 rsvd[24];``
then the 1184-byte report at offset 0x20.
"""

from __future__ import annotations

import ctypes
import hmac
import os
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustpod.errors import DependencyError, EvidenceError, VerificationError
from trustpod.evidence.snp import REPORT_SIZE as SNP_REPORT_SIZE
from trustpod.evidence.snp import SnpReport, report_to_sev_json
from trustpod.guest.attesters.base import unsupported
from trustpod.guest.attesters.tsm import MAX_INBLOB_BYTES, TsmReport

__all__ = [
    "MAX_CERTS_BYTES",
    "SNP_CERT_GUIDS",
    "SNP_GET_EXT_REPORT",
    "SNP_GET_REPORT",
    "SNP_PROVIDER",
    "SNP_REPORT_SIZE",
    "SevGuestDevice",
    "SnpAttester",
    "SnpSettings",
    "parse_cert_table",
]

SNP_PROVIDER = "sev_guest"
_HOST_DATA_SIZE = 32


def _iowr(type_char: str, nr: int, size: int) -> int:
    # Linux asm-generic/ioctl.h: dir (READ|WRITE = 3) << 30 | size << 16 | type << 8 | nr.
    return (3 << 30) | (size << 16) | (ord(type_char) << 8) | nr


#: struct snp_guest_request_ioctl: u8 msg_version, 7 bytes padding, u64 req, u64 resp, u64 exit.
_IOCTL_STRUCT = struct.Struct("<B7xQQQ")
SNP_GET_REPORT = _iowr("S", 0x0, _IOCTL_STRUCT.size)
_REPORT_REQ = struct.Struct("<64sI28x")
#: struct snp_ext_report_req: snp_report_req, u64 certs_address, u32 certs_len (+4 padding).
_EXT_REPORT_REQ = struct.Struct("<64sI28xQI4x")
SNP_GET_EXT_REPORT = _iowr("S", 0x2, _IOCTL_STRUCT.size)
#: exitinfo2 upper half: SNP_GUEST_VMM_ERR_INVALID_LEN (certificate buffer too small).
_VMM_ERR_INVALID_LEN = 1
_DEFAULT_CERTS_BYTES = 4 * 4096
#: Upper bound on the certificate table we accept from the host (a setting with a safe default).
MAX_CERTS_BYTES = 64 * 1024
_RESP_SIZE = 4000
_RESP_HEADER = struct.Struct("<II24x")
_MSG_VERSION = 1

#: GHCB certificate table GUIDs -> sev crate ``CertType`` names.
SNP_CERT_GUIDS = {
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ARK",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ASK",
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "VCEK",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "VLEK",
    uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea"): "CRL",
}
_CERT_ENTRY = struct.Struct("<16sII")


def parse_cert_table(blob: bytes) -> list[dict[str, Any]]:
    """GHCB certificate table (``guid[16] | u32 offset | u32 length`` ..., zero terminator)
    -> sev crate ``CertTableEntry`` JSON list."""
    out: list[dict[str, Any]] = []
    pos = 0
    while True:
        if pos + _CERT_ENTRY.size > len(blob):
            raise EvidenceError("certificate table without terminator", reason="snp.cert_table")
        guid, offset, length = _CERT_ENTRY.unpack_from(blob, pos)
        if guid == bytes(16):
            return out
        if offset + length > len(blob) or length == 0:
            raise EvidenceError("certificate table entry out of bounds", reason="snp.cert_table")
        key = uuid.UUID(bytes=guid)
        cert_type: Any = SNP_CERT_GUIDS.get(key, {"OTHER": str(key)})
        out.append({"cert_type": cert_type, "data": list(blob[offset : offset + length])})
        pos += _CERT_ENTRY.size


IoctlFn = Callable[[int, int, bytearray], None]


def _real_ioctl(fd: int, request: int, arg: bytearray) -> None:
    import fcntl

    fcntl.ioctl(fd, request, arg, True)


class SevGuestDevice:
    """``SNP_GET_REPORT`` / ``SNP_GET_EXT_REPORT`` on ``/dev/sev-guest`` (the ioctl function is
    injectable for tests)."""

    def __init__(
        self,
        path: Path = Path("/dev/sev-guest"),
        *,
        ioctl: IoctlFn = _real_ioctl,
        max_certs_bytes: int = MAX_CERTS_BYTES,
    ) -> None:
        self.path = path
        self._ioctl = ioctl
        self._max_certs = max_certs_bytes

    def available(self) -> bool:
        return self.path.exists()

    def _request(self, request: int, req: Any) -> bytes:
        resp = ctypes.create_string_buffer(_RESP_SIZE)
        arg = bytearray(
            _IOCTL_STRUCT.pack(_MSG_VERSION, ctypes.addressof(req), ctypes.addressof(resp), 0)
        )
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError as exc:
            raise DependencyError(
                f"cannot open {self.path}: {exc}", reason="snp.sev_guest_open"
            ) from exc
        try:
            self._ioctl(fd, request, arg)
        except OSError as exc:
            exitinfo2 = _IOCTL_STRUCT.unpack(bytes(arg))[3]
            raise _IoctlError(str(exc), exitinfo2) from exc
        finally:
            os.close(fd)
        status, size = _RESP_HEADER.unpack_from(resp.raw, 0)
        if status != 0 or size != SNP_REPORT_SIZE:
            raise DependencyError(
                f"SNP firmware status {status}, report size {size}", reason="snp.get_report"
            )
        start = _RESP_HEADER.size
        return resp.raw[start : start + SNP_REPORT_SIZE]

    def get_report(self, report_data: bytes, vmpl: int) -> bytes:
        req = ctypes.create_string_buffer(_REPORT_REQ.pack(report_data, vmpl), _REPORT_REQ.size)
        try:
            return self._request(SNP_GET_REPORT, req)
        except _IoctlError as exc:
            raise DependencyError(
                f"SNP_GET_REPORT failed: {exc} (exitinfo2=0x{exc.exitinfo2:x})",
                reason="snp.get_report",
            ) from exc

    def get_ext_report(self, report_data: bytes, vmpl: int) -> tuple[bytes, bytes | None]:
        """Report plus the host's certificate table (``None`` when the host provides none).
        A too-small buffer is retried once with the length the kernel asks for."""
        certs_len = _DEFAULT_CERTS_BYTES
        for _ in range(2):
            certs = ctypes.create_string_buffer(certs_len)
            req = ctypes.create_string_buffer(
                _EXT_REPORT_REQ.pack(report_data, vmpl, ctypes.addressof(certs), certs_len),
                _EXT_REPORT_REQ.size,
            )
            try:
                report = self._request(SNP_GET_EXT_REPORT, req)
            except _IoctlError as exc:
                wanted = _EXT_REPORT_REQ.unpack(req.raw)[3]
                if exc.exitinfo2 >> 32 == _VMM_ERR_INVALID_LEN and 0 < wanted <= self._max_certs:
                    certs_len = wanted
                    continue
                raise DependencyError(
                    f"SNP_GET_EXT_REPORT failed: {exc} (exitinfo2=0x{exc.exitinfo2:x})",
                    reason="snp.get_ext_report",
                ) from exc
            table = certs.raw
            return report, (table if any(table[: _CERT_ENTRY.size]) else None)
        raise DependencyError("certificate table keeps growing", reason="snp.get_ext_report")


class _IoctlError(Exception):
    def __init__(self, message: str, exitinfo2: int) -> None:
        super().__init__(message)
        self.exitinfo2 = exitinfo2


@dataclass(frozen=True, slots=True)
class SnpSettings:
    tsm_root: Path = Path("/sys/kernel/config/tsm/report")
    sev_guest_path: Path = Path("/dev/sev-guest")
    vmpl: int = 0


class SnpAttester:
    """``snp``: raw report from configfs-tsm (``sev_guest``) or ``/dev/sev-guest``."""

    tee = "snp"

    def __init__(
        self,
        settings: SnpSettings | None = None,
        *,
        tsm: TsmReport | None = None,
        device: SevGuestDevice | None = None,
    ) -> None:
        self.settings = settings or SnpSettings()
        self._tsm = tsm or TsmReport(SNP_PROVIDER, root=self.settings.tsm_root)
        self._device = device or SevGuestDevice(self.settings.sev_guest_path)

    def report(self, report_data: bytes) -> tuple[bytes, bytes | None]:
        """Raw report and auxblob (certificate table) for ``report_data``."""
        if len(report_data) > MAX_INBLOB_BYTES:
            raise EvidenceError(
                f"report data is {len(report_data)} bytes; at most 64 fit",
                reason="snp.report_data_size",
            )
        padded = report_data.ljust(MAX_INBLOB_BYTES, b"\0")
        # (1) configfs-tsm when available (privlevel = VMPL); (2) else the sev-guest ioctl.
        if self._tsm.available():
            res = self._tsm.generate(padded, privlevel=self.settings.vmpl, want_aux=True)
            raw, aux = res.outblob, res.auxblob
        elif self._device.available():
            raw, aux = self._device.get_ext_report(padded, self.settings.vmpl)
        else:
            raise DependencyError(
                "no SEV-SNP interface (configfs-tsm or /dev/sev-guest)", reason="snp.unavailable"
            )
        if len(raw) < SNP_REPORT_SIZE:
            raise EvidenceError(f"SNP report is {len(raw)} bytes", reason="snp.report_size")
        return raw[:SNP_REPORT_SIZE], aux

    def get_evidence(self, report_data: bytes) -> Any:
        raw, aux = self.report(report_data)
        return {
            "attestation_report": report_to_sev_json(raw),
            "cert_chain": parse_cert_table(aux) if aux else None,
        }

    def bind_init_data(self, digest: bytes) -> None:
        # Upstream snp/hostdata.rs: fresh report (report_data = 0^64), HOST_DATA == pad32(digest).
        raw, _ = self.report(b"\0" * MAX_INBLOB_BYTES)
        host_data = SnpReport.from_bytes(raw).host_data
        expected = digest[:_HOST_DATA_SIZE].ljust(_HOST_DATA_SIZE, b"\0")
        if not hmac.compare_digest(host_data, expected):
            raise VerificationError(
                "the initdata digest does not match this guest's HOST_DATA",
                reason="snp.init_data_mismatch",
                fix="launch the guest with HOST_DATA = the initdata digest (padded to 32 bytes)",
            )

    def extend_runtime_measurement(self, event_digest: bytes, register_index: int) -> None:
        raise unsupported(self.tee, "runtime measurement")
