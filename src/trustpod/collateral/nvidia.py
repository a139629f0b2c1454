"""NVIDIA RIM collateral: the offline store (default) and an optional RIM-service fetcher.

Layout under the collateral directory (docs/collateral.md)::

    nvidia/rim-roots.pem          trusted RIM signing roots (PEM; e.g. NVIDIA's CoRIM root)
    nvidia/rims/<RIM id>.swidtag  driver / VBIOS RIMs, e.g. NV_GPU_DRIVER_GH100_550.90.07.swidtag

With ``[trustpod.verifier_options.nvidia] rim_service_url = "https://rim.attestation.nvidia.com"``
a RIM missing from the store is fetched (``GET <url>/v1/rim/<id>`` -> ``{"rim": "<base64 XML>"}``)
and written to the store; every RIM is still verified on use. Without ``rim-roots.pem`` no RIM
check runs (the verifier's claims are then exactly upstream's local ones).

``ocsp_url = "https://ocsp.ndis.nvidia.com/"`` in the same table turns on OCSP for the device
chain (``HttpxPost``: ``application/ocsp-request``, timeout and size limit). Off by default.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustpod.collateral.ports import HttpGet
from trustpod.errors import ConfigError, DependencyError
from trustpod.verifiers.base import VerifierSettings

if TYPE_CHECKING:
    from trustpod.verifiers.nvidia_ocsp import OcspChecker, OcspPort
    from trustpod.verifiers.nvidia_rim import RimChecker

__all__ = [
    "DirectoryRimSource",
    "HttpxPost",
    "RimServiceSource",
    "load_rim_roots",
    "ocsp_checker",
    "rim_checker",
]

_log = logging.getLogger(__name__)
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
MAX_RIM_BYTES = 1024 * 1024


def _check_id(rim_id: str) -> str:
    if not _ID.match(rim_id) or ".." in rim_id:
        raise DependencyError(f"invalid RIM id {rim_id!r}", reason="collateral.rim_id")
    return rim_id


@dataclass(frozen=True, slots=True)
class DirectoryRimSource:
    """``<dir>/nvidia/rims/<id>.swidtag`` (offline)."""

    directory: Path

    def _path(self, rim_id: str) -> Path:
        return self.directory / "nvidia" / "rims" / f"{_check_id(rim_id)}.swidtag"

    def rim(self, rim_id: str) -> bytes | None:
        path = self._path(rim_id)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_RIM_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DependencyError(f"cannot read {path}: {exc}", reason="collateral.read") from exc
        return data

    def store(self, rim_id: str, data: bytes) -> None:
        path = self._path(rim_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class RimServiceSource:
    """The store first, then NVIDIA's RIM service (written back to the store)."""

    store: DirectoryRimSource | None
    base_url: str
    http: HttpGet

    def rim(self, rim_id: str) -> bytes | None:
        if self.store is not None:
            cached = self.store.rim(rim_id)
            if cached is not None:
                return cached
        url = f"{self.base_url.rstrip('/')}/v1/rim/{_check_id(rim_id)}"
        status, _, body = self.http.get(url)
        if status == 404:
            return None
        if status != 200:
            raise DependencyError(
                f"RIM service {url}: HTTP {status}", reason="collateral.rim_fetch"
            )
        try:
            data = base64.b64decode(json.loads(body)["rim"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise DependencyError(
                f"RIM service {url}: bad response ({exc})", reason="collateral.rim_fetch"
            ) from exc
        if self.store is not None:
            self.store.store(rim_id, data)
        return data


def load_rim_roots(directory: Path) -> tuple[bytes, ...]:
    """DER of every certificate in ``<dir>/nvidia/rim-roots.pem`` (empty when absent)."""
    path = directory / "nvidia" / "rim-roots.pem"
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return ()
    try:
        return tuple(c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(text))
    except ValueError as exc:
        raise ConfigError(
            f"{path}: not a PEM certificate list ({exc})", reason="config.rim_roots"
        ) from exc


def rim_checker(settings: VerifierSettings, http: HttpGet | None = None) -> RimChecker | None:
    """A ``RimChecker`` when the collateral store holds RIM roots, else ``None``."""
    if settings.collateral_dir is None:
        return None
    roots = load_rim_roots(settings.collateral_dir)
    if not roots:
        return None
    from trustpod.verifiers.nvidia_rim import RimChecker, RimRoots

    store = DirectoryRimSource(settings.collateral_dir)
    url = settings.extra.get("nvidia", {}).get("rim_service_url")
    source: DirectoryRimSource | RimServiceSource = store
    if url:
        if http is None:
            from trustpod.collateral.intel_pcs import HttpxGet

            http = HttpxGet(timeout_s=settings.fetch_timeout_s, max_bytes=MAX_RIM_BYTES * 2)
        source = RimServiceSource(store, str(url), http)
    _log.info("nvidia: RIM checks on (%d root(s), service %s)", len(roots), url or "off")
    return RimChecker(source, RimRoots(roots))


@dataclass(frozen=True, slots=True)
class HttpxPost:
    """``OcspPort`` over httpx: one POST with a timeout and a response size limit."""

    timeout_s: float = 10.0
    max_bytes: int = 64 * 1024

    def post(self, url: str, body: bytes) -> bytes:
        import httpx

        headers = {"Content-Type": "application/ocsp-request"}
        try:
            with httpx.Client(timeout=self.timeout_s) as client:
                with client.stream("POST", url, content=body, headers=headers) as resp:
                    data = bytearray()
                    for chunk in resp.iter_bytes():
                        data += chunk
                        if len(data) > self.max_bytes:
                            raise DependencyError(
                                f"OCSP response from {url} exceeds {self.max_bytes} bytes",
                                reason="collateral.too_large",
                            )
                    status = resp.status_code
        except httpx.HTTPError as exc:
            raise DependencyError(
                f"OCSP request {url} failed: {exc}", reason="collateral.ocsp"
            ) from exc
        if status != 200:
            raise DependencyError(f"OCSP responder {url}: HTTP {status}", reason="collateral.ocsp")
        return bytes(data)


def ocsp_checker(settings: VerifierSettings, port: OcspPort | None = None) -> OcspChecker | None:
    """An ``OcspChecker`` when ``[trustpod.verifier_options.nvidia] ocsp_url`` is set."""
    url = settings.extra.get("nvidia", {}).get("ocsp_url")
    if not url:
        return None
    from trustpod.verifiers.nvidia_ocsp import OcspChecker

    _log.info("nvidia: OCSP for device chains via %s", url)
    return OcspChecker(port or HttpxPost(timeout_s=settings.fetch_timeout_s), str(url))
