"""Intel PCS / PCCS v4 client: an ``HttpGet`` port (httpx adapter with a timeout and a size
limit), retry with backoff on 429/503 honouring ``Retry-After``, issuer chains from the headers.

Endpoints: ``/tdx/certification/v4/tcb?fmspc=`` (header ``TCB-Info-Issuer-Chain``),
``/tdx/certification/v4/qe/identity`` (``SGX-Enclave-Identity-Issuer-Chain``),
``/sgx/certification/v4/pckcrl?ca=&encoding=der`` and ``/sgx/certification/v4/rootcacrl`` (PCCS).
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from trustpod.collateral.ports import HttpGet
from trustpod.errors import DependencyError, EvidenceError, NotFoundError
from trustpod.verifiers.intel_collateral import IntelCollateral

__all__ = [
    "MAX_BACKOFF_S",
    "MAX_RESPONSE_BYTES",
    "MAX_RETRIES",
    "HttpGet",
    "HttpxGet",
    "IntelItems",
    "PcsClient",
    "check_platform",
    "normalize_pcs_url",
]

MAX_RESPONSE_BYTES = 1024 * 1024  #: named limit per PCS response
MAX_RETRIES = 3  #: retries on 429 / 503
MAX_BACKOFF_S = 30.0  #: cap on Retry-After / exponential backoff
_FMSPC = re.compile(r"^[0-9A-Fa-f]{12}$")
_CAS = ("platform", "processor")


@dataclass(slots=True)
class HttpxGet:
    """``HttpGet`` over httpx with a timeout and a streamed size limit."""

    timeout_s: float = 10.0
    max_bytes: int = MAX_RESPONSE_BYTES
    verify: bool | str = True

    def get(self, url: str) -> tuple[int, Mapping[str, str], bytes]:
        try:
            with (
                httpx.Client(timeout=self.timeout_s, verify=self.verify) as client,
                client.stream("GET", url) as resp,
            ):
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise DependencyError(
                            f"Intel PCS response from {url} exceeds {self.max_bytes} bytes",
                            reason="collateral.too_large",
                        )
                return resp.status_code, dict(resp.headers), bytes(body)
        except httpx.HTTPError as exc:
            raise DependencyError(f"Intel PCS request {url} failed: {exc}",
                                  reason="collateral.fetch_failed") from exc  # fmt: skip


@dataclass(frozen=True, slots=True)
class IntelItems:
    """Raw collateral items as served (bytes), ready for the store or ``IntelCollateral``."""

    tcb_info: bytes
    tcb_info_issuer_chain: bytes | None
    qe_identity: bytes
    qe_identity_issuer_chain: bytes | None
    pck_crl: bytes | None
    root_ca_crl: bytes | None

    def parse(self) -> IntelCollateral:
        return IntelCollateral.from_parts(
            tcb_info=self.tcb_info,
            qe_identity=self.qe_identity,
            tcb_info_issuer_chain=self.tcb_info_issuer_chain,
            qe_identity_issuer_chain=self.qe_identity_issuer_chain,
            pck_crl=self.pck_crl,
            root_ca_crl=self.root_ca_crl,
        )


def check_platform(fmspc: str, ca: str) -> str:
    if not _FMSPC.match(fmspc) or ca not in _CAS:
        raise EvidenceError(f"invalid FMSPC {fmspc!r} or CA {ca!r}", reason="collateral.key")
    return fmspc.upper()


def normalize_pcs_url(url: str) -> str:
    """Accept a host URL or upstream's ``.../sgx/certification/v4/`` form; return the host."""
    url = url.rstrip("/")
    for suffix in ("/sgx/certification/v4", "/tdx/certification/v4"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise EvidenceError(f"Intel PCS URL {url!r} is not http(s)", reason="collateral.url")
    return url


@dataclass(slots=True)
class PcsClient:
    """Intel PCS / PCCS v4 client with retry + backoff on 429/503 (``Retry-After`` honoured)."""

    base_url: str
    http: HttpGet
    sleep: Callable[[float], None] = time.sleep
    max_retries: int = MAX_RETRIES
    tcb_update_type: str | None = None  #: upstream ``dcap_verifier.tcb_update_type``

    def __post_init__(self) -> None:
        if self.tcb_update_type not in (None, "early", "standard"):
            raise EvidenceError(
                f"tcb_update_type must be 'early' or 'standard', got {self.tcb_update_type!r}",
                reason="collateral.update_type",
            )

    def _get(self, path: str, chain_header: str | None) -> tuple[bytes, bytes | None]:
        url = normalize_pcs_url(self.base_url) + path
        delay = 1.0
        for attempt in range(self.max_retries + 1):
            status, headers, body = self.http.get(url)
            if status == 200:
                lower = {k.lower(): v for k, v in headers.items()}
                chain = lower.get(chain_header.lower()) if chain_header else None
                return body, urllib.parse.unquote(chain).encode() if chain else None
            if status in (429, 503) and attempt < self.max_retries:
                retry_after = {k.lower(): v for k, v in headers.items()}.get("retry-after", "")
                wait = float(retry_after) if retry_after.isdigit() else delay
                self.sleep(min(wait, MAX_BACKOFF_S))
                delay *= 2
                continue
            if status == 404:
                raise NotFoundError(f"Intel PCS has no collateral at {url}",
                                    reason="collateral.not_found")  # fmt: skip
            break
        raise DependencyError(f"Intel PCS {url} answered HTTP {status}",
                              reason="collateral.fetch_failed")  # fmt: skip

    def fetch(self, fmspc: str, ca: str) -> IntelItems:
        fm = check_platform(fmspc, ca)
        upd = f"update={self.tcb_update_type}" if self.tcb_update_type else ""
        tcb, tcb_chain = self._get(
            f"/tdx/certification/v4/tcb?fmspc={fm}" + (f"&{upd}" if upd else ""),
            "TCB-Info-Issuer-Chain",
        )
        qe, qe_chain = self._get(
            "/tdx/certification/v4/qe/identity" + (f"?{upd}" if upd else ""),
            "SGX-Enclave-Identity-Issuer-Chain",
        )
        crl, _ = self._get(f"/sgx/certification/v4/pckcrl?ca={ca}&encoding=der", None)
        root_crl, _ = self._get("/sgx/certification/v4/rootcacrl", None)
        return IntelItems(tcb, tcb_chain, qe, qe_chain, crl, root_crl)

    def get_tdx(self, fmspc: str, ca: str) -> IntelCollateral:
        return self.fetch(fmspc, ca).parse()
