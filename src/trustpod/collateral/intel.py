"""Intel DCAP collateral: offline store, PCS/PCCS client (httpx), persistent file cache.

Offline store layout (docs/collateral.md, "Intel"), under ``<dir>/intel/``:

```
tdx/tcbinfo-<FMSPC>.json                 PCS body {"tcbInfo": ..., "signature": ...}
tdx/tcbinfo-<FMSPC>.issuer-chain.pem     TCB-Info-Issuer-Chain header (TCB signing cert + root)
tdx/qe-identity.json                     PCS body {"enclaveIdentity": ..., "signature": ...}
tdx/qe-identity.issuer-chain.pem         SGX-Enclave-Identity-Issuer-Chain header
pckcrl-<platform|processor>.der          PCK CRL (DER)
rootcacrl.der                            Intel SGX Root CA CRL (DER)
```

FMSPC is upper-case hex. Files are written atomically. PCS endpoints (Intel PCS API v4):
``/tdx/certification/v4/tcb?fmspc=``, ``/tdx/certification/v4/qe/identity``,
``/sgx/certification/v4/pckcrl?ca=&encoding=der``, ``/sgx/certification/v4/rootcacrl`` (PCCS).
"""

from __future__ import annotations

import logging
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from trustpod._internal.clock import Clock, SystemClock
from trustpod.errors import DependencyError, EvidenceError, NotFoundError
from trustpod.verifiers.base import VerifierSettings
from trustpod.verifiers.intel_collateral import IntelCollateral

__all__ = [
    "MAX_RESPONSE_BYTES",
    "CachingIntelSource",
    "DirectoryIntelStore",
    "HttpGet",
    "HttpxGet",
    "IntelItems",
    "PcsClient",
    "fetch_to_store",
    "import_files",
    "normalize_pcs_url",
    "source_from_settings",
]

_log = logging.getLogger(__name__)
MAX_RESPONSE_BYTES = 1024 * 1024  #: named limit per PCS response
MAX_RETRIES = 3  #: retries on 429 / 503
MAX_BACKOFF_S = 30.0  #: cap on Retry-After / exponential backoff
_FMSPC = re.compile(r"^[0-9A-Fa-f]{12}$")
_CAS = ("platform", "processor")


class HttpGet(Protocol):
    """Port: one HTTP GET -> (status, headers, body); raises ``DependencyError`` on I/O errors."""

    def get(self, url: str) -> tuple[int, Mapping[str, str], bytes]: ...


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


def _check(fmspc: str, ca: str) -> str:
    if not _FMSPC.match(fmspc) or ca not in _CAS:
        raise EvidenceError(f"invalid FMSPC {fmspc!r} or CA {ca!r}", reason="collateral.key")
    return fmspc.upper()


@dataclass(frozen=True, slots=True)
class DirectoryIntelStore:
    """The offline store (layout in the module docstring); also the persistent cache."""

    root: Path

    def _paths(self, fmspc: str, ca: str) -> dict[str, Path]:
        base, fm = self.root / "intel", _check(fmspc, ca)
        return {
            "tcb_info": base / "tdx" / f"tcbinfo-{fm}.json",
            "tcb_info_issuer_chain": base / "tdx" / f"tcbinfo-{fm}.issuer-chain.pem",
            "qe_identity": base / "tdx" / "qe-identity.json",
            "qe_identity_issuer_chain": base / "tdx" / "qe-identity.issuer-chain.pem",
            "pck_crl": base / f"pckcrl-{ca}.der",
            "root_ca_crl": base / "rootcacrl.der",
        }

    def load(self, fmspc: str, ca: str) -> IntelItems:
        paths = self._paths(fmspc, ca)
        for required in ("tcb_info", "qe_identity"):
            if not paths[required].is_file():
                raise NotFoundError(
                    f"Intel collateral {paths[required]} not found in the offline store",
                    reason="collateral.not_found",
                    fix="trustpod collateral fetch/import intel (docs/collateral.md)",
                )

        def opt(key: str) -> bytes | None:
            p = paths[key]
            return p.read_bytes() if p.is_file() else None

        return IntelItems(
            tcb_info=paths["tcb_info"].read_bytes(),
            tcb_info_issuer_chain=opt("tcb_info_issuer_chain"),
            qe_identity=paths["qe_identity"].read_bytes(),
            qe_identity_issuer_chain=opt("qe_identity_issuer_chain"),
            pck_crl=opt("pck_crl"),
            root_ca_crl=opt("root_ca_crl"),
        )

    def save(self, fmspc: str, ca: str, items: IntelItems) -> list[Path]:
        written = []
        for key, path in self._paths(fmspc, ca).items():
            data = getattr(items, key)
            if data is None:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            written.append(path)
        return written

    def get_tdx(self, fmspc: str, ca: str) -> IntelCollateral:
        return self.load(fmspc, ca).parse()


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
        fm = _check(fmspc, ca)
        tcb, tcb_chain = self._get(f"/tdx/certification/v4/tcb?fmspc={fm}", "TCB-Info-Issuer-Chain")
        qe, qe_chain = self._get(
            "/tdx/certification/v4/qe/identity", "SGX-Enclave-Identity-Issuer-Chain"
        )
        crl, _ = self._get(f"/sgx/certification/v4/pckcrl?ca={ca}&encoding=der", None)
        root_crl, _ = self._get("/sgx/certification/v4/rootcacrl", None)
        return IntelItems(tcb, tcb_chain, qe, qe_chain, crl, root_crl)

    def get_tdx(self, fmspc: str, ca: str) -> IntelCollateral:
        return self.fetch(fmspc, ca).parse()


@dataclass(slots=True)
class CachingIntelSource:
    """Serve from the store while fresh (``nextUpdate`` ahead of the clock), else fetch + save.

    Staleness is judged by the injected clock; the verifier still checks freshness at the
    verification ``now``. Without a store the cache is in memory only.
    """

    pcs: PcsClient | None
    store: DirectoryIntelStore | None
    clock: Clock = field(default_factory=SystemClock)
    _memory: dict[tuple[str, str], IntelCollateral] = field(default_factory=dict)

    def _fresh(self, col: IntelCollateral) -> bool:
        now = self.clock.now()
        return min(col.tcb_info.next_update, col.qe_identity.next_update) > now

    def get_tdx(self, fmspc: str, ca: str) -> IntelCollateral:
        key = (_check(fmspc, ca), ca)
        cached = self._memory.get(key)
        if cached is None and self.store is not None:
            try:
                cached = self.store.get_tdx(fmspc, ca)
            except NotFoundError:
                cached = None
        if cached is not None and (self.pcs is None or self._fresh(cached)):
            self._memory[key] = cached
            return cached
        if self.pcs is None:
            raise NotFoundError(f"no Intel collateral for FMSPC {fmspc} ({ca} CA)",
                                reason="collateral.not_found")  # fmt: skip
        items = self.pcs.fetch(fmspc, ca)
        col = items.parse()
        if self.store is not None:
            self.store.save(fmspc, ca, items)
        self._memory[key] = col
        return col


def fetch_to_store(
    url: str, fmspc: str, ca: str, dest: Path, timeout_s: float = 10.0
) -> list[Path]:
    """``trustpod collateral fetch intel``: download one platform's collateral into ``dest``."""
    items = PcsClient(url, HttpxGet(timeout_s=timeout_s)).fetch(fmspc, ca)
    items.parse()  # refuse to store something that does not parse
    return DirectoryIntelStore(dest).save(fmspc, ca, items)


def source_from_settings(settings: VerifierSettings) -> CachingIntelSource:
    """Composition for ``trustpod.verifiers.tdx.create``."""
    store = DirectoryIntelStore(settings.collateral_dir) if settings.collateral_dir else None
    pcs = None
    if settings.intel_pcs_url:
        pcs = PcsClient(settings.intel_pcs_url, HttpxGet(timeout_s=settings.fetch_timeout_s))
    return CachingIntelSource(pcs=pcs, store=store)


def import_files(
    dest: Path,
    *,
    tcb_info: Path,
    qe_identity: Path,
    ca: str = "platform",
    tcb_info_issuer_chain: Path | None = None,
    qe_identity_issuer_chain: Path | None = None,
    pck_crl: Path | None = None,
    root_ca_crl: Path | None = None,
) -> list[Path]:
    """``trustpod collateral import intel``: validate local files and file them in the store.

    The FMSPC is read from the TCB info itself.
    """

    def rd(p: Path | None) -> bytes | None:
        return p.read_bytes() if p is not None else None

    items = IntelItems(
        tcb_info=tcb_info.read_bytes(),
        tcb_info_issuer_chain=rd(tcb_info_issuer_chain),
        qe_identity=qe_identity.read_bytes(),
        qe_identity_issuer_chain=rd(qe_identity_issuer_chain),
        pck_crl=rd(pck_crl),
        root_ca_crl=rd(root_ca_crl),
    )
    fmspc = str(items.parse().tcb_info.body.get("fmspc", ""))
    return DirectoryIntelStore(dest).save(fmspc, ca, items)
