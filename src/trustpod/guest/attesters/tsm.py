"""configfs-tsm report ABI (Linux ``/sys/kernel/config/tsm/report``), shared by SNP and TDX.

Protocol (kernel ``Documentation/ABI/testing/configfs-tsm``; upstream
``attester/src/tsm_report``): ``mkdir <root>/<entry>`` creates a request; ``provider`` names the
TEE driver (``sev_guest``, ``tdx_guest``, ``arm_cca_guest``, newline-terminated); an optional
``privlevel`` (SNP VMPL) is written first; writing ``inblob`` (the report data, at most 64 bytes)
and then reading ``outblob`` returns the report/quote; ``auxblob`` holds supplemental data (the
SNP certificate table); ``generation`` counts inblob writes and must still be 1 after the read,
or someone else raced on the entry. ``rmdir`` releases the entry.

The root path and how an entry is created are injectable, so tests drive the exact file protocol
against a temporary directory that plays the kernel.
"""

from __future__ import annotations

import errno
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trustpod.errors import DependencyError, EvidenceError

__all__ = [
    "DEFAULT_MAX_BLOB_BYTES",
    "MAX_INBLOB_BYTES",
    "TSM_REPORT_PATH",
    "TsmReport",
    "TsmResult",
]

_log = logging.getLogger(__name__)

TSM_REPORT_PATH = Path("/sys/kernel/config/tsm/report")
#: The kernel accepts at most 64 bytes of report data (``TSM_INBLOB_MAX``).
MAX_INBLOB_BYTES = 64
#: Upper bound on what we read back from ``outblob``/``auxblob`` (a safe default setting).
DEFAULT_MAX_BLOB_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TsmResult:
    """One configfs-tsm answer: the report/quote, the optional auxblob, and the provider."""

    outblob: bytes
    auxblob: bytes | None
    provider: str


def _default_make_entry(root: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix="trustpod-", dir=root))


class TsmReport:
    """Client of the configfs-tsm report interface for one expected provider."""

    def __init__(
        self,
        provider: str,
        *,
        root: Path = TSM_REPORT_PATH,
        make_entry: Callable[[Path], Path] = _default_make_entry,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
    ) -> None:
        self.provider = provider
        self.root = root
        self._make_entry = make_entry
        self._max = max_blob_bytes

    def available(self) -> bool:
        """True when the configfs-tsm report directory exists."""
        return self.root.is_dir()

    def _read(self, entry: Path, name: str, *, optional: bool = False) -> bytes | None:
        path = entry / name
        try:
            with path.open("rb") as fh:
                data = fh.read(self._max + 1)
        except OSError as exc:
            if optional and exc.errno in (errno.ENOENT, errno.EINVAL, errno.ENODATA):
                return None
            raise DependencyError(
                f"configfs-tsm: cannot read {name}: {exc}", reason=f"tsm.read_{name}"
            ) from exc
        if len(data) > self._max:
            raise EvidenceError(
                f"configfs-tsm: {name} exceeds {self._max} bytes", reason="tsm.too_large"
            )
        return data

    def _write(self, entry: Path, name: str, data: bytes) -> None:
        try:
            (entry / name).write_bytes(data)
        except OSError as exc:
            raise DependencyError(
                f"configfs-tsm: cannot write {name}: {exc}", reason=f"tsm.write_{name}"
            ) from exc

    def generate(
        self, inblob: bytes, *, privlevel: int | None = None, want_aux: bool = False
    ) -> TsmResult:
        """Run one request: returns ``outblob`` (and ``auxblob`` when asked and present)."""
        # (1) the kernel rejects empty or oversized report data.
        if not inblob or len(inblob) > MAX_INBLOB_BYTES:
            raise EvidenceError(
                f"configfs-tsm inblob must be 1..{MAX_INBLOB_BYTES} bytes, got {len(inblob)}",
                reason="tsm.inblob_size",
            )
        if not self.available():
            raise DependencyError(
                f"configfs-tsm report interface not found at {self.root}",
                reason="tsm.unavailable",
                fix="needs Linux >= 6.7 with configfs mounted and a TSM provider driver",
            )
        try:
            entry = self._make_entry(self.root)
        except OSError as exc:
            raise DependencyError(
                f"configfs-tsm: cannot create a report entry: {exc}", reason="tsm.mkdir"
            ) from exc
        try:
            # (2) the entry must belong to the provider we expect (upstream MissingProvider).
            provider = (self._read(entry, "provider") or b"").decode("ascii", "replace")
            if provider.strip() != self.provider:
                raise DependencyError(
                    f"configfs-tsm provider is {provider.strip()!r}, expected {self.provider!r}",
                    reason="tsm.provider",
                )
            if privlevel is not None:
                self._write(entry, "privlevel", str(privlevel).encode())
            # (3) write inblob, read outblob (and auxblob), then check the generation counter.
            self._write(entry, "inblob", inblob)
            outblob = self._read(entry, "outblob") or b""
            auxblob = self._read(entry, "auxblob", optional=True) if want_aux else None
            self._check_generation(entry)
            if not outblob:
                raise DependencyError("configfs-tsm returned an empty outblob", reason="tsm.empty")
            return TsmResult(outblob=outblob, auxblob=auxblob or None, provider=self.provider)
        finally:
            try:
                entry.rmdir()
            except OSError as exc:
                _log.debug("configfs-tsm: rmdir %s failed: %s", entry, exc)

    def _check_generation(self, entry: Path) -> None:
        raw = (self._read(entry, "generation") or b"").decode("ascii", "replace").strip()
        try:
            generation = int(raw)
        except ValueError:
            raise DependencyError(
                f"configfs-tsm generation is not a number: {raw!r}", reason="tsm.generation"
            ) from None
        if generation > 1:
            raise DependencyError(
                f"configfs-tsm inblob write conflict (generation={generation}, expected 1)",
                reason="tsm.race",
                fix="another process used the same report entry; retry",
            )
