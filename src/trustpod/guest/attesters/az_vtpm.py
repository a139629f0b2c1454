"""Azure confidential VM attesters ``az-snp-vtpm`` and ``az-tdx-vtpm`` (vTPM + HCL report).

Facts (kinvolk/azure-cvm-tooling ``az-cvm-vtpm``, guest-components ``attester/src/az_*_vtpm``,
trustee ``deps/verifier/src/az_snp_vtpm``):

* The paravisor (HCL) keeps its report in vTPM NV index ``0x01400001``; writing 64 bytes of
  user data to NV index ``0x01400002`` makes it regenerate the report so that its var_data JSON
  carries ``"user-data": HEX(user data)`` and the SNP/TD report's ``REPORT_DATA[0..32]`` is
  SHA-256(var_data). Azure's NV index holds 2600 bytes (zero padding after ``report_size``).
* The attestation key is the persistent RSA key at ``0x81000003``; quotes cover the 24 SHA-256
  PCRs and carry the report data, unpadded, as qualifying data.
* Evidence v2: ``{"version": 2, "tpm_quote": {"signature": hex(raw RSASSA signature),
  "message": hex(TPMS_ATTEST), "pcrs": [hex x 24]}, "hcl_report": b64url, "vcek": b64url(DER)}``
  for SNP; TDX has ``"td_quote": b64url`` instead of ``vcek``. base64url is padded (serde_with
  ``Base64<UrlSafe>``).
* ``bind_init_data`` extends SHA-256 PCR 8 with the 32-byte digest.

The vTPM is reached through the ``TpmDevice`` port (tpm2-pytss on ``/dev/tpmrm0``, or the
emulated CVM's swtpm / software TPM); the VCEK and the TD quote come from small ports whose
production implementations call Azure IMDS.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from trustpod.errors import ConfigError, DependencyError, EvidenceError
from trustpod.evidence.az import AzEvidence, AzTpmQuote
from trustpod.evidence.hcl import HCL_REPORT_SIZE, HclReport
from trustpod.guest.attesters.tpm import (
    ALL_PCRS,
    INIT_DATA_PCR,
    TpmDevice,
    check_extendable_pcr,
    check_sha256_digest,
)

__all__ = [
    "AZ_EVIDENCE_VERSION",
    "HCL_REPORT_SIZE",
    "VTPM_AK_HANDLE",
    "VTPM_HCL_REPORT_NV_INDEX",
    "VTPM_USER_DATA_NV_INDEX",
    "VTPM_USER_DATA_SIZE",
    "AzSnpVtpmAttester",
    "AzTdxVtpmAttester",
    "AzVtpmSettings",
    "FileVcekSource",
    "ImdsTdQuoteSource",
    "ImdsVcekSource",
    "TdQuoteSource",
    "VcekSource",
    "pem_certificate_to_der",
]

_log = logging.getLogger(__name__)

VTPM_HCL_REPORT_NV_INDEX = 0x01400001
VTPM_USER_DATA_NV_INDEX = 0x01400002
VTPM_USER_DATA_SIZE = 64
VTPM_AK_HANDLE = 0x81000003
AZ_EVIDENCE_VERSION = 2
_IMDS_THIM_URL = "http://169.254.169.254/metadata/THIM/amd/certification"
_IMDS_TDQUOTE_URL = "http://169.254.169.254/acc/tdquote"


@dataclass(frozen=True, slots=True)
class AzVtpmSettings:
    """Where the Azure vTPM artefacts live (Azure's values by default)."""

    tcti: str = "device:/dev/tpmrm0"
    hcl_nv_index: int = VTPM_HCL_REPORT_NV_INDEX
    user_data_nv_index: int = VTPM_USER_DATA_NV_INDEX
    ak_handle: int = VTPM_AK_HANDLE
    imds_timeout_s: float = 10.0
    #: Wait between writing the user data and reading the HCL report, so the paravisor has
    #: regenerated it (az-cvm-vtpm ``get_report_with_report_data`` sleeps 3 s). The emulated
    #: CVM regenerates synchronously and sets 0.
    report_refresh_delay_s: float = 3.0


_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"


def pem_certificate_to_der(pem: str) -> bytes:
    """DER of the first ``CERTIFICATE`` PEM block, without parsing the certificate (AMD's
    certificates have serial 0, which cryptography warns about and will refuse to load)."""
    start = pem.find(_PEM_BEGIN)
    end = pem.find(_PEM_END, start + 1)
    if start < 0 or end < 0:
        raise EvidenceError("expected a PEM CERTIFICATE block", reason="az.vcek_pem")
    body = "".join(pem[start + len(_PEM_BEGIN) : end].split())
    try:
        return base64.b64decode(body, validate=True)
    except ValueError as exc:
        raise EvidenceError("invalid base64 in the VCEK PEM", reason="az.vcek_pem") from exc


class VcekSource(Protocol):
    """Port: the VCEK certificate (DER) of the platform the CVM runs on."""

    def vcek_der(self) -> bytes: ...


class TdQuoteSource(Protocol):
    """Port: turn a TD report into a signed TD quote (Azure: IMDS ``/acc/tdquote``)."""

    def td_quote(self, td_report: bytes) -> bytes: ...


class FileVcekSource:
    """VCEK from a file (PEM or DER), e.g. the emulated vendor directory's ``vcek.pem``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def vcek_der(self) -> bytes:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read VCEK {self.path}: {exc}", reason="az.vcek") from exc
        if raw.lstrip().startswith(b"-----BEGIN"):
            try:
                return pem_certificate_to_der(raw.decode("ascii"))
            except (EvidenceError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    f"{self.path} is not a PEM certificate", reason="az.vcek"
                ) from exc
        return raw


class ImdsVcekSource:
    """VCEK from Azure IMDS (THIM): ``GET /metadata/THIM/amd/certification``, ``vcekCert``."""

    def __init__(self, url: str = _IMDS_THIM_URL, *, timeout_s: float = 10.0) -> None:
        self.url, self.timeout_s = url, timeout_s

    def vcek_der(self) -> bytes:
        import httpx

        try:
            resp = httpx.get(self.url, headers={"Metadata": "true"}, timeout=self.timeout_s)
            resp.raise_for_status()
            return pem_certificate_to_der(str(resp.json()["vcekCert"]))
        except (httpx.HTTPError, KeyError, ValueError, TypeError, EvidenceError) as exc:
            raise DependencyError(
                f"cannot fetch the VCEK from Azure IMDS: {exc}", reason="az.imds_vcek"
            ) from exc


class ImdsTdQuoteSource:
    """TD quote from Azure IMDS: ``POST /acc/tdquote {"report": b64url(td_report)}``."""

    def __init__(self, url: str = _IMDS_TDQUOTE_URL, *, timeout_s: float = 10.0) -> None:
        self.url, self.timeout_s = url, timeout_s

    def td_quote(self, td_report: bytes) -> bytes:
        import httpx

        body = {"report": base64.urlsafe_b64encode(td_report).decode().rstrip("=")}
        try:
            resp = httpx.post(self.url, json=body, timeout=self.timeout_s)
            resp.raise_for_status()
            text = str(resp.json()["quote"])
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (httpx.HTTPError, KeyError, ValueError, TypeError) as exc:
            raise DependencyError(
                f"cannot get a TD quote from Azure IMDS: {exc}", reason="az.imds_tdquote"
            ) from exc


class _AzVtpmBase:
    tee = ""

    def __init__(self, device: TpmDevice, settings: AzVtpmSettings | None = None) -> None:
        self.device = device
        self.settings = settings or AzVtpmSettings()
        # One evidence at a time: the user-data NV index is shared, so a concurrent request
        # could replace it between our write and our HCL read.
        self._lock = threading.Lock()

    def hcl_report(self, report_data: bytes) -> bytes:
        """Bind ``report_data`` as HCL user data and read back the regenerated HCL report."""
        if len(report_data) > VTPM_USER_DATA_SIZE:
            raise EvidenceError(
                f"report data is {len(report_data)} bytes; the HCL user data holds "
                f"{VTPM_USER_DATA_SIZE}",
                reason="az.report_data_size",
            )
        # (1) user data (zero-padded to 64) -> NV 0x01400002: the paravisor regenerates the report.
        user_data = report_data.ljust(VTPM_USER_DATA_SIZE, b"\0")
        self.device.nv_write(self.settings.user_data_nv_index, user_data)
        if self.settings.report_refresh_delay_s > 0:
            time.sleep(self.settings.report_refresh_delay_s)
        # (2) read the HCL report from NV 0x01400001. Azure's index holds HCL_REPORT_SIZE (2600)
        # bytes; a shorter index (swtpm caps one at 2048) is zero-padded to that size, which is
        # exact because the tail after report_size is zero padding on Azure too.
        raw = self.device.nv_read(self.settings.hcl_nv_index)
        if len(raw) > HCL_REPORT_SIZE:
            raise DependencyError("HCL report larger than expected", reason="az.hcl_size")
        return raw.ljust(HCL_REPORT_SIZE, b"\0")

    def tpm_quote(self, report_data: bytes) -> AzTpmQuote:
        # (3) quote the 24 SHA-256 PCRs with the unpadded report data as qualifying data.
        quote = self.device.quote(self.settings.ak_handle, ALL_PCRS, report_data)
        return AzTpmQuote(quote.raw_signature, quote.message, quote.pcrs)

    def close(self) -> None:
        """Release the vTPM (for the emulated CVM: power it off)."""
        self.device.close()

    def bind_init_data(self, digest: bytes) -> None:
        # Upstream utils::extend_pcr(digest, INIT_DATA_PCR): SHA-256, exactly 32 bytes.
        digest = check_sha256_digest(digest, what="initdata digest")
        _log.info("extending PCR %d with the initdata digest %s", INIT_DATA_PCR, digest.hex())
        self.device.pcr_extend(INIT_DATA_PCR, digest)

    def extend_runtime_measurement(self, event_digest: bytes, register_index: int) -> None:
        # Azure vTPM: the PCR index is used as-is (pcr_to_ccmr is the identity), SHA-256 bank.
        self.device.pcr_extend(
            check_extendable_pcr(register_index),
            check_sha256_digest(event_digest, what="event digest"),
        )


class AzSnpVtpmAttester(_AzVtpmBase):
    """``az-snp-vtpm`` evidence v2."""

    tee = "az-snp-vtpm"

    def __init__(
        self, device: TpmDevice, vcek: VcekSource, settings: AzVtpmSettings | None = None
    ) -> None:
        super().__init__(device, settings)
        self.vcek = vcek

    def get_evidence(self, report_data: bytes) -> Any:
        with self._lock:
            hcl = self.hcl_report(report_data)
            quote = self.tpm_quote(report_data)
        vcek = self.vcek.vcek_der()
        return AzEvidence(AZ_EVIDENCE_VERSION, quote, hcl, vcek=vcek).to_json()


class AzTdxVtpmAttester(_AzVtpmBase):
    """``az-tdx-vtpm`` evidence v2: the TD report inside the HCL report is quoted via IMDS."""

    tee = "az-tdx-vtpm"

    def __init__(
        self, device: TpmDevice, quoter: TdQuoteSource, settings: AzVtpmSettings | None = None
    ) -> None:
        super().__init__(device, settings)
        self.quoter = quoter

    def get_evidence(self, report_data: bytes) -> Any:
        with self._lock:
            hcl = self.hcl_report(report_data)
            quote = self.tpm_quote(report_data)
        td_report = HclReport.from_bytes(hcl).td_report()
        td_quote = self.quoter.td_quote(td_report)
        return AzEvidence(AZ_EVIDENCE_VERSION, quote, hcl, td_quote=td_quote).to_json()
