"""Pod VM images: read-only root + dm-verity hash device + boot manifest, their PCR 11
measurement (systemd-stub UKI model, ADR 0800), reference values and the boot-time check."""

from __future__ import annotations

from trustpod.image.boot import (
    EmulatorPcrs,
    PcrExtender,
    boot_pod_vm,
    check_root,
    expected_pcr11,
    measure_uki_boot,
)
from trustpod.image.manifest import BootManifest

__all__ = [
    "BootManifest",
    "EmulatorPcrs",
    "PcrExtender",
    "boot_pod_vm",
    "check_root",
    "expected_pcr11",
    "measure_uki_boot",
]
