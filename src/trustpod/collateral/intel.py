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

FMSPC is upper-case hex. Files are written atomically. The PCS/PCCS client is in
``trustpod.collateral.intel_pcs`` (re-exported here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from trustpod._internal.clock import Clock, SystemClock
from trustpod.collateral.intel_pcs import (
    MAX_RESPONSE_BYTES,
    HttpGet,
    HttpxGet,
    IntelItems,
    PcsClient,
    check_platform,
    normalize_pcs_url,
)
from trustpod.errors import NotFoundError
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


@dataclass(frozen=True, slots=True)
class DirectoryIntelStore:
    """The offline store (layout in the module docstring); also the persistent cache."""

    root: Path

    def _paths(self, fmspc: str, ca: str) -> dict[str, Path]:
        base, fm = self.root / "intel", check_platform(fmspc, ca)
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
        key = (check_platform(fmspc, ca), ca)
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
        update = settings.extra.get("tdx", {}).get("tcb_update_type")
        pcs = PcsClient(
            settings.intel_pcs_url,
            HttpxGet(timeout_s=settings.fetch_timeout_s),
            tcb_update_type=str(update) if update is not None else None,
        )
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
