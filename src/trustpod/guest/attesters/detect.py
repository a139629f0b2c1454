"""Platform detection and the attester factory.

``detect_tee(settings)`` checks, in upstream's order (``attester/src/lib.rs detect_tee_type``):
TDX (``/dev/tdx_guest``), Azure TDX and SNP CVMs (a vTPM at the TCTI's device whose NV index
``0x01400001`` holds an HCL report, by report type), SNP (``/dev/sev-guest`` or
``/sys/devices/platform/sev-guest``), a generic TPM device; with nothing found it raises a clear
error instead of silently falling back to ``sample`` as upstream does.

``make_attester(name, settings)`` builds an attester by name: ``auto`` (detect), ``sample``,
``az-snp-vtpm``, ``az-tdx-vtpm``, ``snp``, ``tdx``, ``tpm``, ``emulated-az-snp-vtpm`` (boots an
emulated Azure CVM in-process; its ``tee`` on the wire is ``az-snp-vtpm``).

Settings (a mapping, from ``attester_settings`` in the guest config; unknown keys are errors):
``tcti``, ``ak_handle``, ``vcek_path`` (az-snp-vtpm VCEK file instead of IMDS), ``tsm_root``,
``sev_guest_path``, ``vmpl``, ``tdx_measurements_dir``, ``ccel_path``, ``emulator_dir``,
``emulator_backend`` (``swtpm`` | ``software``), ``report_refresh_delay_s`` (az-*: wait after
writing the HCL user data, default 3).
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trustpod.errors import ConfigError, DependencyError, TrustpodError
from trustpod.evidence.hcl import (
    HCL_REPORT_SIZE,
    HCL_SIGNATURE,
    REPORT_TYPE_SNP,
    REPORT_TYPE_TDX,
    HclReport,
)
from trustpod.guest.attesters.base import Attester

__all__ = ["ATTESTER_NAMES", "SETTING_KEYS", "detect_tee", "make_attester"]

_log = logging.getLogger(__name__)

ATTESTER_NAMES = (
    "auto",
    "sample",
    "az-snp-vtpm",
    "az-tdx-vtpm",
    "snp",
    "tdx",
    "tpm",
    "emulated-az-snp-vtpm",
)
SETTING_KEYS = frozenset(
    {
        "tcti",
        "ak_handle",
        "vcek_path",
        "tsm_root",
        "sev_guest_path",
        "vmpl",
        "tdx_measurements_dir",
        "ccel_path",
        "emulator_dir",
        "emulator_backend",
        "report_refresh_delay_s",
    }
)
_TPM_DEVICES = (Path("/dev/tpmrm0"), Path("/dev/tpm0"))
_HCL_TYPES = {REPORT_TYPE_SNP: "az-snp-vtpm", REPORT_TYPE_TDX: "az-tdx-vtpm"}


def _opt(settings: Mapping[str, Any], key: str, default: Any) -> Any:
    value = settings.get(key)
    return default if value is None else value


def _int(value: Any, key: str) -> int:
    try:
        return int(value, 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"attester setting {key} must be an integer", reason="config.attester"
        ) from None


def _float(value: Any, key: str) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"attester setting {key} must be a number", reason="config.attester"
        ) from None
    if not 0 <= result <= 60:
        raise ConfigError(f"attester setting {key} must be within 0..60", reason="config.attester")
    return result


def _paths(settings: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """Setting key -> dataclass field, for the path settings that are present."""
    return {field: Path(str(settings[key])) for key, field in names.items() if settings.get(key)}


def _azure_kind(settings: Mapping[str, Any]) -> str | None:
    from trustpod.guest.attesters.az_vtpm import VTPM_HCL_REPORT_NV_INDEX
    from trustpod.guest.attesters.tpm import Tpm2PytssDevice

    tcti = str(_opt(settings, "tcti", "device:/dev/tpmrm0"))
    if tcti.startswith("device:") and not Path(tcti.partition(":")[2]).exists():
        return None
    try:
        device = Tpm2PytssDevice(tcti)
    except TrustpodError:
        return None
    try:
        hcl = device.nv_read(VTPM_HCL_REPORT_NV_INDEX)
    except TrustpodError:
        return None
    finally:
        device.close()
    if len(hcl) > HCL_REPORT_SIZE:
        return None
    try:
        report = HclReport.from_bytes(hcl.ljust(HCL_REPORT_SIZE, b"\0"))
    except TrustpodError:
        return None
    return _HCL_TYPES.get(report.report_type) if report.signature == HCL_SIGNATURE else None


def detect_tee(settings: Mapping[str, Any] | None = None) -> str:
    """The TEE this machine offers, or ``DependencyError`` with what to do instead."""
    settings = settings or {}
    if Path("/dev/tdx_guest").exists():
        return "tdx"
    azure = _azure_kind(settings)
    if azure:
        return azure
    sev = Path(str(_opt(settings, "sev_guest_path", "/dev/sev-guest")))
    if sev.exists() or Path("/sys/devices/platform/sev-guest").exists():
        return "snp"
    if any(p.exists() for p in _TPM_DEVICES):
        return "tpm"
    raise DependencyError(
        "no TEE found: no /dev/tdx_guest, no Azure vTPM HCL report (NV 0x01400001), "
        "no /dev/sev-guest, no TPM device",
        reason="attester.no_tee",
        fix="use --tee sample for testing, or start the emulated CVM "
        "(attester = emulated-az-snp-vtpm)",
    )


def make_attester(name: str, settings: Mapping[str, Any] | None = None) -> Attester:
    """Build the attester ``name`` (see module docs) from ``settings``."""
    settings = dict(settings or {})
    unknown = set(settings) - SETTING_KEYS
    if unknown:
        raise ConfigError(
            f"unknown attester settings: {', '.join(sorted(unknown))}",
            reason="config.attester",
            fix=f"known keys: {', '.join(sorted(SETTING_KEYS))}",
        )
    if name == "auto":
        name = detect_tee(settings)
        _log.info("detected TEE: %s", name)
    if name == "sample":
        from trustpod.guest.attesters.sample import SampleAttester

        return SampleAttester()
    if name in ("az-snp-vtpm", "az-tdx-vtpm"):
        return _make_azure(name, settings)
    if name == "snp":
        from trustpod.guest.attesters.snp import SnpAttester, SnpSettings

        snp = SnpSettings(
            **_paths(settings, {"tsm_root": "tsm_root", "sev_guest_path": "sev_guest_path"}),
            vmpl=_int(_opt(settings, "vmpl", 0), "vmpl"),
        )
        return SnpAttester(snp)
    if name == "tdx":
        from trustpod.guest.attesters.tdx import TdxAttester, TdxSettings

        names = {
            "tsm_root": "tsm_root",
            "ccel_path": "ccel_path",
            "tdx_measurements_dir": "measurements_dir",
        }
        tdx = TdxSettings(**_paths(settings, names))
        return TdxAttester(tdx)
    if name == "tpm":
        from trustpod.guest.attesters.tpm import (
            DEFAULT_TPM_AK_HANDLE,
            Tpm2PytssDevice,
            TpmAttester,
        )

        device = Tpm2PytssDevice(str(_opt(settings, "tcti", "device:/dev/tpmrm0")))
        handle = _int(_opt(settings, "ak_handle", DEFAULT_TPM_AK_HANDLE), "ak_handle")
        return TpmAttester(device, ak_handle=handle)
    if name == "emulated-az-snp-vtpm":
        from trustpod.guest.emulator.cvm import EmulatedAzureCvm

        directory = _opt(settings, "emulator_dir", None)
        backend = str(_opt(settings, "emulator_backend", "swtpm"))
        cvm = EmulatedAzureCvm.create(Path(directory) if directory else None, backend=backend)
        cvm.boot()
        atexit.register(cvm.shutdown)  # safety net; attester.close() powers it off earlier
        return cvm.attester()
    raise ConfigError(
        f"unknown attester {name!r}",
        reason="config.attester",
        fix=f"one of: {', '.join(ATTESTER_NAMES)}",
    )


def _make_azure(name: str, settings: Mapping[str, Any]) -> Attester:
    from trustpod.guest.attesters.az_vtpm import (
        VTPM_AK_HANDLE,
        AzSnpVtpmAttester,
        AzTdxVtpmAttester,
        AzVtpmSettings,
        FileVcekSource,
        ImdsTdQuoteSource,
        ImdsVcekSource,
        VcekSource,
    )
    from trustpod.guest.attesters.tpm import Tpm2PytssDevice

    az = AzVtpmSettings(
        tcti=str(_opt(settings, "tcti", "device:/dev/tpmrm0")),
        ak_handle=_int(_opt(settings, "ak_handle", VTPM_AK_HANDLE), "ak_handle"),
        report_refresh_delay_s=_float(
            _opt(settings, "report_refresh_delay_s", 3.0), "report_refresh_delay_s"
        ),
    )
    device = Tpm2PytssDevice(az.tcti)
    if name == "az-tdx-vtpm":
        return AzTdxVtpmAttester(device, ImdsTdQuoteSource(timeout_s=az.imds_timeout_s), az)
    vcek_path = _opt(settings, "vcek_path", None)
    imds = ImdsVcekSource(timeout_s=az.imds_timeout_s)
    vcek: VcekSource = FileVcekSource(Path(vcek_path)) if vcek_path else imds
    return AzSnpVtpmAttester(device, vcek, az)
