"""AMD Key Distribution Service (KDS) client and the caching source verifiers use.

Endpoints (AMD "VCEK certificate and KDS interface specification"; trustee ``snp/mod.rs``)::

    GET {base}/vcek/v1/{Product}/{hwid}?[fmcSPL=NN&]blSPL=NN&teeSPL=NN&snpSPL=NN&ucodeSPL=NN  (DER)
    GET {base}/vcek/v1/{Product}/cert_chain     (PEM: ASK, then ARK)
    GET {base}/vlek/v1/{Product}/cert_chain     (PEM: ASVK, then ARK)

KDS rate-limits with HTTP 429: we retry with exponential backoff honouring ``Retry-After``
(capped), and every response body is size limited. Downloaded CA certificates are checked against
the pinned ARK before use or storage. ``CachingAmdSource`` puts a ``FileCache`` (or memory) in
front of the fetcher, so each VCEK is downloaded once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustpod.collateral.cache import FileCache, check_ca_cert
from trustpod.collateral.ports import AmdCaCerts, AmdTcb, tcb_store_prefix
from trustpod.errors import DependencyError, EvidenceError, NotFoundError
from trustpod.verifiers.base import VerifierSettings

__all__ = [
    "DEFAULT_KDS_URL",
    "AmdKdsFetcher",
    "CachingAmdSource",
    "KdsSettings",
    "sources_from_settings",
]

_log = logging.getLogger(__name__)
DEFAULT_KDS_URL = "https://kdsintf.amd.com"


@dataclass(frozen=True, slots=True)
class KdsSettings:
    """Limits for talking to KDS (all named, with safe defaults)."""

    base_url: str = DEFAULT_KDS_URL
    timeout_s: float = 10.0
    max_response_bytes: int = 64 * 1024
    max_attempts: int = 4
    backoff_s: float = 0.5
    max_retry_after_s: float = 30.0


class AmdKdsFetcher:
    """Synchronous KDS client (httpx). ``transport`` is injectable for tests."""

    def __init__(
        self,
        settings: KdsSettings | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings or KdsSettings()
        self._sleep = sleep
        self._client = httpx.Client(
            timeout=self.settings.timeout_s, transport=transport, follow_redirects=False
        )

    def __repr__(self) -> str:
        return f"AmdKdsFetcher({self.settings.base_url!r})"

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ HTTP with retries
    def _get(self, path: str) -> bytes:
        s = self.settings
        url = s.base_url.rstrip("/") + path
        last = "no attempt"
        for attempt in range(1, s.max_attempts + 1):
            try:
                with self._client.stream("GET", url) as resp:
                    if resp.status_code == 200:
                        return self._read_limited(resp, url)
                    if resp.status_code == 404:
                        raise NotFoundError(f"KDS has no {path}", reason="collateral.kds_not_found")
                    last = f"HTTP {resp.status_code}"
                    if resp.status_code != 429 and resp.status_code < 500:
                        break
                    delay = self._retry_delay(resp.headers.get("retry-after"), attempt)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                delay = s.backoff_s * 2.0 ** (attempt - 1)
            if attempt < s.max_attempts:
                _log.info("KDS %s: %s; retrying in %.1fs", path, last, delay)
                self._sleep(delay)
        raise DependencyError(
            f"AMD KDS request failed ({last}): {url}",
            reason="collateral.kds_unavailable",
            fix="retry later, or fill the collateral directory with `trustpod collateral fetch`",
        )

    def _retry_delay(self, retry_after: str | None, attempt: int) -> float:
        delay: float = self.settings.backoff_s * 2.0 ** (attempt - 1)
        if retry_after is not None:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        return min(delay, self.settings.max_retry_after_s)

    def _read_limited(self, resp: httpx.Response, url: str) -> bytes:
        limit = self.settings.max_response_bytes
        chunks, size = [], 0
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise DependencyError(
                    f"KDS response from {url} exceeds {limit} bytes", reason="collateral.kds_size"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------------ VcekSource / RootSource
    def get_vcek(self, product: str, hwid: str, tcb: AmdTcb) -> bytes:
        query = f"blSPL={tcb.bootloader:02d}&teeSPL={tcb.tee:02d}&snpSPL={tcb.snp:02d}"
        query += f"&ucodeSPL={tcb.microcode:02d}"
        if product == "Turin":
            if tcb.fmc is None:
                raise EvidenceError("a Turin VCEK needs the fmc TCB value", reason="collateral.tcb")
            query = f"fmcSPL={tcb.fmc:02d}&" + query
        return self._get(f"/vcek/v1/{product}/{hwid}?{query}")

    def get_ca_certs(self, product: str) -> AmdCaCerts:
        ask, ark = self._chain(f"/vcek/v1/{product}/cert_chain")
        asvk: bytes | None
        try:
            asvk, _ = self._chain(f"/vlek/v1/{product}/cert_chain")
        except (NotFoundError, DependencyError, EvidenceError) as exc:
            _log.debug("no ASVK for %s: %s", product, exc)
            asvk = None
        check_ca_cert(product, "ark", ark, None)
        check_ca_cert(product, "ask", ask, ark)
        if asvk is not None:
            check_ca_cert(product, "asvk", asvk, ark)
        return AmdCaCerts(ark=ark, ask=ask, asvk=asvk)

    def _chain(self, path: str) -> tuple[bytes, bytes]:
        try:
            certs = x509.load_pem_x509_certificates(self._get(path))
        except ValueError as exc:
            raise EvidenceError(
                f"KDS {path} is not a PEM chain", reason="collateral.kds_pem"
            ) from exc
        if len(certs) != 2:
            raise EvidenceError(f"KDS {path} must hold 2 certificates", reason="collateral.kds_pem")
        return certs[0].public_bytes(Encoding.DER), certs[1].public_bytes(Encoding.DER)


@dataclass
class CachingAmdSource:
    """Cache (file or memory) first, then KDS; fetched items are stored in the cache."""

    cache: FileCache | None = None
    fetcher: AmdKdsFetcher | None = None
    _memory: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    _ca: dict[str, AmdCaCerts] = field(default_factory=dict)

    def get_vcek(self, product: str, hwid: str, tcb: AmdTcb) -> bytes:
        key = (product, hwid, tcb_store_prefix(tcb))
        if key in self._memory:
            return self._memory[key]
        if self.cache is not None:
            try:
                der = self.cache.get_vcek(product, hwid, tcb)
                self._memory[key] = der
                return der
            except NotFoundError:
                if self.fetcher is None:
                    raise
        if self.fetcher is None:
            raise NotFoundError("no VCEK source configured", reason="collateral.vcek_missing")
        der = self.fetcher.get_vcek(product, hwid, tcb)
        if self.cache is not None:
            self.cache.put_vcek(hwid, tcb, der)
        self._memory[key] = der
        return der

    def get_ca_certs(self, product: str) -> AmdCaCerts:
        if product in self._ca:
            return self._ca[product]
        ca = self.cache.get_ca_certs(product) if self.cache is not None else AmdCaCerts()
        if (ca.ark is None or ca.ask is None) and self.fetcher is not None:
            ca = self.fetcher.get_ca_certs(product)
            if self.cache is not None:
                for kind in ("ark", "ask", "asvk"):
                    der = getattr(ca, kind)
                    if der is not None:
                        self.cache.put_ca(product, kind, der)
        if ca.ark is not None and ca.ask is not None:
            self._ca[product] = ca
        return ca


def sources_from_settings(settings: VerifierSettings) -> list[CachingAmdSource]:
    """The AMD source for ``settings``: collateral dir and/or KDS (``amd_kds_url``)."""
    cache = FileCache(settings.collateral_dir) if settings.collateral_dir is not None else None
    fetcher = None
    if settings.amd_kds_url is not None:
        fetcher = AmdKdsFetcher(
            KdsSettings(base_url=settings.amd_kds_url, timeout_s=settings.fetch_timeout_s)
        )
    return [CachingAmdSource(cache, fetcher)]
