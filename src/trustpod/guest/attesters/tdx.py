"""Intel TDX attester over configfs-tsm (upstream ``attester/src/tdx``).

Evidence: ``{"quote": b64(TD quote), "cc_eventlog": b64(CCEL) | null}``. The report data (at
most 64 bytes) is zero-padded to 64 and written to the ``tdx_guest`` configfs-tsm entry; quotes
are only obtained through configfs-tsm, as upstream does.

``bind_init_data`` compares MRCONFIGID with the initdata digest zero-padded to 48 bytes: from
sysfs (``.../tdx_guest/measurements/mrconfigid``, kernel >= 6.16) when present, else from a
fresh quote's body.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustpod._internal.b64 import b64_encode
from trustpod.errors import DependencyError, EvidenceError, VerificationError
from trustpod.evidence.tdx import parse_td_quote
from trustpod.guest.attesters.tsm import MAX_INBLOB_BYTES, TsmReport

__all__ = ["MRCONFIGID_SIZE", "TDX_PROVIDER", "TdxAttester", "TdxSettings", "pad_report_data"]

_log = logging.getLogger(__name__)

TDX_PROVIDER = "tdx_guest"
MRCONFIGID_SIZE = 48
_RTMR_SIZE = 48


@dataclass(frozen=True, slots=True)
class TdxSettings:
    """Device paths (settings, so tests can point them at temporary files)."""

    tsm_root: Path = Path("/sys/kernel/config/tsm/report")
    ccel_path: Path = Path("/sys/firmware/acpi/tables/data/CCEL")
    measurements_dir: Path = Path("/sys/devices/virtual/misc/tdx_guest/measurements")
    max_eventlog_bytes: int = 1024 * 1024


def pad_report_data(report_data: bytes) -> bytes:
    if len(report_data) > MAX_INBLOB_BYTES:
        raise EvidenceError(
            f"report data is {len(report_data)} bytes; at most {MAX_INBLOB_BYTES} fit",
            reason="tdx.report_data_size",
        )
    return report_data.ljust(MAX_INBLOB_BYTES, b"\0")


class TdxAttester:
    """``tdx``: TD quote via configfs-tsm, CCEL attached when readable."""

    tee = "tdx"

    def __init__(self, settings: TdxSettings | None = None, *, tsm: TsmReport | None = None):
        self.settings = settings or TdxSettings()
        self._tsm = tsm or TsmReport(TDX_PROVIDER, root=self.settings.tsm_root)

    def _quote(self, report_data: bytes) -> bytes:
        return self._tsm.generate(pad_report_data(report_data)).outblob

    def _eventlog(self) -> str | None:
        path = self.settings.ccel_path
        try:
            with path.open("rb") as fh:
                data = fh.read(self.settings.max_eventlog_bytes + 1)
        except OSError:
            return None
        if len(data) > self.settings.max_eventlog_bytes:
            raise EvidenceError("CCEL exceeds max_eventlog_bytes", reason="tdx.eventlog_size")
        return b64_encode(data) if data else None

    def get_evidence(self, report_data: bytes) -> Any:
        # (1) quote with the padded report data; (2) attach the CC event log when present.
        return {"quote": b64_encode(self._quote(report_data)), "cc_eventlog": self._eventlog()}

    def _mr_config_id(self) -> bytes:
        sysfs = self.settings.measurements_dir / "mrconfigid"
        if sysfs.is_file():
            raw = sysfs.read_bytes()
            # The attribute may be binary (48 bytes) or hex text.
            if len(raw) == MRCONFIGID_SIZE:
                return raw
            try:
                return bytes.fromhex(raw.decode("ascii").strip())
            except ValueError as exc:
                raise DependencyError(
                    "unreadable mrconfigid attribute", reason="tdx.mrconfigid"
                ) from exc
        quote = parse_td_quote(self._quote(b"\0" * MAX_INBLOB_BYTES))
        return quote.body.mr_config_id

    def bind_init_data(self, digest: bytes) -> None:
        # Upstream tdx bind_init_data: MRCONFIGID == digest zero-padded/truncated to 48 bytes.
        expected = digest[:MRCONFIGID_SIZE].ljust(MRCONFIGID_SIZE, b"\0")
        if not hmac.compare_digest(self._mr_config_id(), expected):
            raise VerificationError(
                "the initdata digest does not match this TD's MRCONFIGID",
                reason="tdx.init_data_mismatch",
                fix="launch the TD with MRCONFIGID = the initdata digest (padded to 48 bytes)",
            )

    def extend_runtime_measurement(self, event_digest: bytes, register_index: int) -> None:
        # PCR -> RTMR mapping (upstream pcr_to_ccmr): 1|7 -> RTMR0, 2..6 -> RTMR1,
        # 8..15 -> RTMR2, anything else -> RTMR3; SHA-384 with the digest padded to 48 bytes.
        if register_index in (1, 7):
            rtmr = 0
        elif 2 <= register_index <= 6:
            rtmr = 1
        elif 8 <= register_index <= 15:
            rtmr = 2
        else:
            rtmr = 3
        target = self.settings.measurements_dir / f"rtmr{rtmr}:sha384"
        if not target.exists():
            raise DependencyError(
                f"RTMR extension needs {target} (Linux >= 6.16)", reason="tdx.rtmr_unsupported"
            )
        target.write_bytes(event_digest[:_RTMR_SIZE].ljust(_RTMR_SIZE, b"\0"))
