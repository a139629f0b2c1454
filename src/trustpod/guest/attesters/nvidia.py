"""GPU evidence for the ``nvidia`` TEE (a device attester: its evidence travels as
``additional_evidence`` next to the CPU's).

Upstream: ``gc:attestation-agent/attester/src/nvidia/nvat.rs`` (NVAT SDK over NVML): nonce = the
first 32 bytes of report_data (zero-padded), evidence JSON ``{"device_evidence_list": [{"arch",
"uuid", "evidence": b64(SPDM request||response), "certificate": b64(PEM chain)}]}``.

Sources behind the ``GpuSource`` port:

* ``NvmlSource``: NVML through ``nvidia-ml-py`` (``pynvml``), used only when the module imports
  and ``/dev/nvidia0`` exists: ``nvmlDeviceGetConfComputeGpuAttestationReport`` and
  ``nvmlDeviceGetConfComputeGpuCertificate`` per device (the calls nvtrust's local verifier
  makes). Not exercised here (no GPU on this machine).
* ``EmulatedSource``: an ``EmulatedGpu`` (tests, demo).

``detect_gpu()`` says plainly why there is no GPU evidence ("no GPU") instead of failing later.
"""

from __future__ import annotations

import base64
import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from trustpod.errors import DependencyError
from trustpod.guest.attesters.base import unsupported
from trustpod.guest.emulator.gpu import EmulatedGpu

__all__ = [
    "EmulatedSource",
    "GpuDetection",
    "GpuReport",
    "GpuSource",
    "NvidiaAttester",
    "NvmlSource",
    "detect_gpu",
    "spdm_nonce",
]

_DEVICE = Path("/dev/nvidia0")


def spdm_nonce(report_data: bytes) -> bytes:
    """First 32 bytes of report_data, zero-padded (upstream attester and verifier)."""
    return report_data[:32].ljust(32, b"\0")


@dataclass(frozen=True, slots=True)
class GpuReport:
    """One device's raw evidence."""

    arch: str
    uuid: str
    report: bytes
    chain_pem: bytes


class GpuSource(Protocol):
    """Port: the GPUs' SPDM reports for a 32-byte nonce."""

    def reports(self, nonce: bytes) -> list[GpuReport]: ...


@dataclass(frozen=True, slots=True)
class GpuDetection:
    """Whether GPU evidence can be collected, and why not."""

    available: bool
    reason: str


def detect_gpu(device: Path = _DEVICE) -> GpuDetection:
    """``available`` only with an NVIDIA device node and ``nvidia-ml-py`` installed."""
    if not device.exists():
        return GpuDetection(False, f"no GPU: {device} does not exist")
    try:
        importlib.import_module("pynvml")
    except ImportError:
        return GpuDetection(False, "no GPU evidence: nvidia-ml-py (pynvml) is not installed")
    return GpuDetection(True, f"NVIDIA GPU at {device}")


class EmulatedSource:
    """Reports from an ``EmulatedGpu`` (insecure; its root must be trusted by the KBS)."""

    def __init__(self, gpu: EmulatedGpu) -> None:
        self._gpu = gpu

    def reports(self, nonce: bytes) -> list[GpuReport]:
        g = self._gpu
        return [GpuReport("HOPPER", g.uuid, g.report(nonce), g.chain_pem)]


class NvmlSource:  # pragma: no cover - needs an NVIDIA confidential-computing GPU
    """NVML through ``pynvml`` (``nvidia-ml-py``)."""

    def __init__(self) -> None:
        try:
            self._nvml: Any = importlib.import_module("pynvml")
        except ImportError as exc:
            raise DependencyError(
                "nvidia-ml-py is not installed", reason="attester.nvidia_nvml"
            ) from exc

    def reports(self, nonce: bytes) -> list[GpuReport]:
        nv = self._nvml
        try:
            nv.nvmlInit()
            try:
                out = []
                for i in range(nv.nvmlDeviceGetCount()):
                    h = nv.nvmlDeviceGetHandleByIndex(i)
                    rep = nv.nvmlDeviceGetConfComputeGpuAttestationReport(h, nonce)
                    cert = nv.nvmlDeviceGetConfComputeGpuCertificate(h)
                    raw = bytes(rep.attestationReport[: rep.attestationReportSize])
                    chain = bytes(cert.attestationCertChain[: cert.attestationCertChainSize])
                    uuid = nv.nvmlDeviceGetUUID(h)
                    out.append(GpuReport("HOPPER", str(uuid), raw, chain))
                return out
            finally:
                nv.nvmlShutdown()
        except nv.NVMLError as exc:
            raise DependencyError(f"NVML: {exc}", reason="attester.nvidia_nvml") from exc


class NvidiaAttester:
    """``Attester`` for tee ``nvidia``: the device evidence list for ``report_data``."""

    tee = "nvidia"

    def __init__(self, source: GpuSource) -> None:
        self._source = source

    @classmethod
    def from_environment(cls, emulated_dir: str | None = None) -> NvidiaAttester | None:
        """An emulated GPU from ``emulated_dir`` (or env ``TRUSTPOD_EMULATED_GPU``), NVML when a
        GPU is detected, else ``None`` (no GPU: attest the CPU alone)."""
        emulated = emulated_dir or os.environ.get("TRUSTPOD_EMULATED_GPU")
        if emulated:
            return cls(EmulatedSource(EmulatedGpu.load(Path(emulated))))
        if detect_gpu().available:  # pragma: no cover - needs a GPU
            return cls(NvmlSource())
        return None

    def get_evidence(self, report_data: bytes) -> dict[str, Any]:
        reports: Sequence[GpuReport] = self._source.reports(spdm_nonce(report_data))
        if not reports:
            raise DependencyError("no GPU reported evidence", reason="attester.nvidia_no_gpu")
        return {
            "device_evidence_list": [
                {
                    "arch": r.arch,
                    "uuid": r.uuid,
                    "evidence": base64.b64encode(r.report).decode(),
                    "certificate": base64.b64encode(r.chain_pem).decode(),
                }
                for r in reports
            ]
        }

    def bind_init_data(self, digest: bytes) -> None:
        raise unsupported(self.tee, "binding initdata")

    def extend_runtime_measurement(self, event_digest: bytes, register_index: int) -> None:
        raise unsupported(self.tee, "runtime measurements")
