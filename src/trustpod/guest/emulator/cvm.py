"""``EmulatedAzureCvm``: an Azure SEV-SNP confidential VM, emulated on any Linux machine.

What is emulated and how (everything else is the production code path):

* the AMD platform: an emulated vendor chain (``vendor``) whose VCEK signs SNP reports;
* the paravisor (HCL): when user data is written to vTPM NV ``0x01400002`` it rebuilds the HCL
  report (SNP report at VMPL 0 with ``REPORT_DATA[0..32] = SHA-256(var_data)``, var_data JSON
  carrying the AK public key as a JWK ``kid = "HCLAkPub"`` and ``"user-data"``) and stores it
  in NV ``0x01400001``, as Azure does;
* the vTPM: a real swtpm (``backend="swtpm"``, through tpm2-pytss) or a pure-Python TPM
  (``backend="software"``, for unit tests and benchmarks). The AK is an RSA-2048 restricted
  RSASSA-SHA256 key persisted at ``0x81000003``.

``attester()`` returns the SAME ``AzSnpVtpmAttester`` used on real Azure, wired to this vTPM;
its evidence (format v2) goes through the ``az-snp-vtpm`` verifier unchanged, which accepts it
only when ``insecure_emulated_roots`` names this CVM's ``ark.pem``.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives import serialization

from trustpod.errors import ConfigError
from trustpod.guest.attesters.az_vtpm import (
    VTPM_AK_HANDLE,
    VTPM_HCL_REPORT_NV_INDEX,
    VTPM_USER_DATA_NV_INDEX,
    VTPM_USER_DATA_SIZE,
    AzSnpVtpmAttester,
    AzVtpmSettings,
)
from trustpod.guest.attesters.tpm import INIT_DATA_PCR, QuoteResult, TpmDevice
from trustpod.guest.emulator.hcl import build_hcl_report, build_var_data, hcl_used_size
from trustpod.guest.emulator.softtpm import SOFT_TPM_NV_INDEX_MAX, SoftwareTpm
from trustpod.guest.emulator.vendor import EmulatedVendor, load_or_create_vendor

__all__ = ["BACKENDS", "CvmProfile", "EmulatedAzureCvm", "VendorVcekSource"]

_log = logging.getLogger(__name__)

BACKENDS = ("swtpm", "software")


@dataclass(frozen=True, slots=True)
class CvmProfile:
    """What the emulated platform reports about the guest (Azure-like defaults)."""

    measurement: bytes = hashlib.sha384(b"trustpod EMULATED Azure CVM paravisor v1").digest()
    policy: int = 0x3001F  # ABI 0.31, SMT allowed, bit 17 (reserved, must be 1), no debug
    host_data: bytes = bytes(32)
    guest_svn: int = 0
    platform_info: int = 0x3  # SMT enabled, TSME enabled
    vm_configuration: dict[str, Any] = field(
        default_factory=lambda: {
            "console-enabled": False,
            "secure-boot": True,
            "tpm-enabled": True,
            "vmUniqueId": str(uuid.uuid4()).upper(),
        }
    )

    def nv_hcl_report(
        self, vendor: EmulatedVendor, ak: Any, user_data: bytes, report_id: bytes
    ) -> bytes:
        """The paravisor's HCL report for ``user_data``, as stored in NV 0x01400001.

        swtpm caps an NV index at 2048 bytes: the used part (report_size) is kept, padded to the
        index size; the attester zero-pads what it reads back to Azure's 2600 bytes."""
        var_data = build_var_data(ak, user_data, self.vm_configuration)
        hcl = build_hcl_report(
            vendor,
            var_data,
            measurement=self.measurement,
            policy=self.policy,
            host_data=self.host_data,
            guest_svn=self.guest_svn,
            platform_info=self.platform_info,
            report_id=report_id,
        )
        used = hcl_used_size(hcl)
        if used > SOFT_TPM_NV_INDEX_MAX:
            raise ConfigError(
                f"HCL report of {used} bytes exceeds the emulated NV index",
                reason="emulator.hcl_size",
                fix="shorten vm_configuration",
            )
        return hcl[:SOFT_TPM_NV_INDEX_MAX]


class VendorVcekSource:
    """``VcekSource`` serving the emulated VCEK (what IMDS/THIM serves on Azure)."""

    def __init__(self, vendor: EmulatedVendor) -> None:
        self._der = vendor.vcek_der

    def vcek_der(self) -> bytes:
        return self._der


class _ParavisorTpm:
    """The vTPM as the guest sees it: writes to the user-data NV index trigger a new report."""

    def __init__(self, inner: TpmDevice, cvm: EmulatedAzureCvm) -> None:
        self._inner, self._cvm = inner, cvm

    def nv_read(self, index: int) -> bytes:
        return self._inner.nv_read(index)

    def nv_write(self, index: int, data: bytes) -> None:
        self._inner.nv_write(index, data)
        if index == VTPM_USER_DATA_NV_INDEX:
            self._cvm.refresh_hcl_report()

    def nv_define(self, index: int, size: int) -> None:
        self._inner.nv_define(index, size)

    def ak_public_der(self, handle: int) -> bytes:
        return self._inner.ak_public_der(handle)

    def create_persistent_ak(self, handle: int) -> bytes:
        return self._inner.create_persistent_ak(handle)

    def quote(self, handle: int, pcrs: Sequence[int], nonce: bytes) -> QuoteResult:
        return self._inner.quote(handle, pcrs, nonce)

    def pcr_read(self, pcrs: Sequence[int]) -> list[bytes]:
        return self._inner.pcr_read(pcrs)

    def pcr_extend(self, index: int, digest: bytes) -> None:
        self._inner.pcr_extend(index, digest)

    def close(self) -> None:
        """Closing the guest's vTPM powers the emulated CVM off (stops swtpm)."""
        self._cvm.shutdown()


class EmulatedAzureCvm:
    """One emulated CVM. ``boot()`` it, take ``attester()``, ``shutdown()`` (or use ``with``)."""

    def __init__(
        self,
        vendor: EmulatedVendor,
        *,
        backend: str = "swtpm",
        profile: CvmProfile | None = None,
        state_dir: Path | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(
                f"unknown emulator backend {backend!r}",
                reason="emulator.backend",
                fix=f"one of: {', '.join(BACKENDS)}",
            )
        self.vendor = vendor
        self.backend = backend
        self.profile = profile or CvmProfile()
        self.state_dir = state_dir
        self._swtpm: Any = None
        self._inner: TpmDevice | None = None
        self._device: _ParavisorTpm | None = None
        self._lock = threading.Lock()
        self._report_id = hashlib.sha256(uuid.uuid4().bytes).digest()

    @classmethod
    def create(
        cls,
        directory: Path | None = None,
        *,
        backend: str = "swtpm",
        profile: CvmProfile | None = None,
    ) -> EmulatedAzureCvm:
        """A CVM whose vendor chain lives in ``directory/vendor`` (created on first use; a
        temporary directory when ``None``). Point the KBS at ``directory/vendor/ark.pem``.
        The vTPM starts empty at every boot (fresh swtpm state in a private temp dir)."""
        base = directory or Path(tempfile.mkdtemp(prefix="trustpod-cvm-"))
        vendor = load_or_create_vendor(base / "vendor")
        return cls(vendor, backend=backend, profile=profile)

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def device(self) -> TpmDevice:
        """The guest's vTPM (requires ``boot()``)."""
        if self._device is None:
            raise ConfigError("the emulated CVM is not booted", reason="emulator.not_booted")
        return self._device

    @property
    def tcti(self) -> str | None:
        """TCTI of the swtpm (``None`` for the software back end)."""
        return self._swtpm.tcti if self._swtpm is not None else None

    def boot(self, initdata_digest: bytes | None = None) -> EmulatedAzureCvm:
        """Start the vTPM, provision AK and NV indices, publish the first HCL report; extend
        PCR 8 with ``initdata_digest`` (32 bytes) like Azure peer pods' boot unit does.

        Pass ``initdata_digest`` here OR let the AA bind it (``bind_init_data``), not both: two
        extends give ``PCR8 = H(H(0||d)||d)`` and the verifier's initdata check fails."""
        if self._device is not None:
            raise ConfigError("the emulated CVM is already booted", reason="emulator.booted")
        if self.backend == "swtpm":
            from trustpod.guest.attesters.tpm import Tpm2PytssDevice
            from trustpod.guest.emulator.swtpm import SwtpmProcess

            self._swtpm = SwtpmProcess(self.state_dir).start()
            try:
                self._inner = Tpm2PytssDevice(self._swtpm.tcti)
            except Exception:
                self._swtpm.stop()
                self._swtpm = None
                raise
        else:
            self._inner = SoftwareTpm()
        self._device = _ParavisorTpm(self._inner, self)
        try:
            self._inner.create_persistent_ak(VTPM_AK_HANDLE)
            self._inner.nv_define(VTPM_USER_DATA_NV_INDEX, VTPM_USER_DATA_SIZE)
            self._inner.nv_write(VTPM_USER_DATA_NV_INDEX, bytes(VTPM_USER_DATA_SIZE))
            self._inner.nv_define(VTPM_HCL_REPORT_NV_INDEX, SOFT_TPM_NV_INDEX_MAX)
            self.refresh_hcl_report()
            if initdata_digest is not None:
                self.attester().bind_init_data(initdata_digest)
        except Exception:
            self.shutdown()
            raise
        _log.warning(
            "EMULATED Azure CVM booted (%s vTPM); its evidence only verifies with "
            "insecure_emulated_roots",
            self.backend,
        )
        return self

    def shutdown(self) -> None:
        """Close the vTPM and stop swtpm (by PID)."""
        device, self._device, self._inner = self._inner, None, None
        if device is not None:
            device.close()
        if self._swtpm is not None:
            self._swtpm.stop()
            self._swtpm = None

    def __enter__(self) -> EmulatedAzureCvm:
        return self if self._device is not None else self.boot()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    # -- guest-facing -----------------------------------------------------------------------
    def attester(self) -> AzSnpVtpmAttester:
        """The production ``az-snp-vtpm`` attester, wired to this CVM's vTPM and VCEK."""
        return AzSnpVtpmAttester(
            self.device,
            VendorVcekSource(self.vendor),
            AzVtpmSettings(tcti=self.tcti or "", report_refresh_delay_s=0.0),
        )

    def extend_pcr(self, index: int, digest: bytes) -> None:
        """Measured-boot hook (e.g. PCR 11 for the kernel command line): SHA-256 extend."""
        self.device.pcr_extend(index, digest)

    def initdata_pcr(self) -> bytes:
        return self.device.pcr_read([INIT_DATA_PCR])[0]

    # -- paravisor --------------------------------------------------------------------------
    def refresh_hcl_report(self) -> None:
        """Rebuild the HCL report from the current user data and store it in NV 0x01400001."""
        inner = self._inner
        if inner is None:
            raise ConfigError("the emulated CVM is not booted", reason="emulator.not_booted")
        with self._lock:
            user_data = inner.nv_read(VTPM_USER_DATA_NV_INDEX)
            ak = serialization.load_der_public_key(inner.ak_public_der(VTPM_AK_HANDLE))
            nv_report = self.profile.nv_hcl_report(self.vendor, ak, user_data, self._report_id)
            inner.nv_write(VTPM_HCL_REPORT_NV_INDEX, nv_report)
