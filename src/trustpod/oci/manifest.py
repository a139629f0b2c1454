"""OCI / Docker v2 manifests, indexes and image configs (pure; image-spec v1.1, docker v2s2).

Each parser takes the raw bytes exactly as received (their digest is what signatures name) and
returns frozen dataclasses; anything unexpected is an ``EvidenceError`` ``image.manifest``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from trustpod.errors import EvidenceError, NotFoundError
from trustpod.oci.reference import DIGEST_RE
from trustpod.oci.settings import OciSettings, Platform

__all__ = [
    "CONFIG_TYPES",
    "INDEX_TYPES",
    "LAYER_TYPES",
    "MANIFEST_ACCEPT",
    "MANIFEST_TYPES",
    "Descriptor",
    "ImageConfig",
    "ImageIndex",
    "ImageManifest",
    "compression_of",
    "digest_of",
    "parse_config",
    "parse_manifest_or_index",
    "select_platform",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_ACCEPT = ", ".join(MANIFEST_TYPES + INDEX_TYPES)
CONFIG_TYPES = (
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
)
#: layer media type → compression ("" = none).
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _bad(what: str) -> EvidenceError:
    return EvidenceError(f"malformed image manifest: {what}", reason="image.manifest")


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)


def _descriptor(obj: Any, where: str, *, with_platform: bool = False) -> Descriptor:
    if not isinstance(obj, dict):
        raise _bad(f"{where} is not an object")
    mt, dg, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(mt, str) or not mt:
        raise _bad(f"{where}.mediaType missing")
    if not isinstance(dg, str) or not DIGEST_RE.fullmatch(dg):
        raise _bad(f"{where}.digest is not a sha256/sha512 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _bad(f"{where}.size is not a non-negative integer")
    ann = obj.get("annotations") or {}
    if not isinstance(ann, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in ann.items()
    ):
        raise _bad(f"{where}.annotations must map strings to strings")
    plat = None
    if with_platform and obj.get("platform") is not None:
        p = obj["platform"]
        if not isinstance(p, dict) or not isinstance(p.get("os"), str):
            raise _bad(f"{where}.platform is malformed")
        if not isinstance(p.get("architecture"), str):
            raise _bad(f"{where}.platform.architecture missing")
        variant = p.get("variant")
        if variant is not None and not isinstance(variant, str):
            raise _bad(f"{where}.platform.variant is not a string")
        plat = Platform(p["os"], p["architecture"], variant or None)
    return Descriptor(mt, dg, size, plat, tuple(sorted(ann.items())))


@dataclass(frozen=True, slots=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    digest: str
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ImageIndex:
    media_type: str
    manifests: tuple[Descriptor, ...]
    digest: str


def _load(raw: bytes, limit: int) -> dict[str, Any]:
    if len(raw) > limit:
        raise EvidenceError(
            f"manifest is {len(raw)} bytes (limit {limit})", reason="image.too_large"
        )
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise _bad("not a JSON object")
    return doc


def parse_manifest_or_index(
    raw: bytes, content_type: str | None, settings: OciSettings
) -> ImageManifest | ImageIndex:
    """Parse a manifest or an index; the body's ``mediaType`` wins, then the Content-Type."""
    doc = _load(raw, settings.max_manifest_bytes)
    digest = digest_of(raw)
    body_type = doc.get("mediaType")
    header = (content_type or "").split(";", 1)[0].strip() or None
    media_type = body_type if isinstance(body_type, str) else header
    if media_type is None:
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if doc.get("schemaVersion") != 2:
        raise _bad(f"schemaVersion must be 2 (docker schema 1 is not supported), type {media_type}")
    if media_type in INDEX_TYPES:
        items = doc.get("manifests")
        if not isinstance(items, list):
            raise _bad("index without a manifests list")
        if len(items) > settings.max_index_entries:
            raise EvidenceError(f"index has {len(items)} entries", reason="image.too_large")
        descs = tuple(
            _descriptor(m, f"manifests[{i}]", with_platform=True) for i, m in enumerate(items)
        )
        return ImageIndex(media_type, descs, digest)
    if media_type not in MANIFEST_TYPES:
        raise _bad(f"unsupported manifest media type {media_type!r}")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise _bad("manifest without a layers list")
    if len(layers) > settings.max_layers:
        raise EvidenceError(
            f"manifest has {len(layers)} layers (limit {settings.max_layers})",
            reason="image.too_large",
        )
    config = _descriptor(doc.get("config"), "config")
    ann = doc.get("annotations") or {}
    if not isinstance(ann, dict) or not all(isinstance(v, str) for v in ann.values()):
        raise _bad("annotations must map strings to strings")
    return ImageManifest(
        media_type,
        config,
        tuple(_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers)),
        digest,
        tuple(sorted(ann.items())),
    )


def select_platform(index: ImageIndex, want: Platform) -> Descriptor:
    """The first manifest of ``index`` for ``want`` (variant compared only when requested)."""
    for desc in index.manifests:
        p = desc.platform
        if desc.media_type not in MANIFEST_TYPES or p is None:
            continue
        if p.os == want.os and p.architecture == want.architecture:
            if want.variant is None or p.variant == want.variant:
                return desc
    raise NotFoundError(
        f"the image index {index.digest} has no manifest for {want}",
        reason="image.platform",
        fix="pull a multi-platform image that includes this platform, or set the platform",
    )


def compression_of(desc: Descriptor) -> str:
    """``""``, ``gzip`` or ``zstd``; encrypted or unknown layers are refused."""
    if desc.media_type.endswith("+encrypted"):
        raise EvidenceError(
            f"layer {desc.digest} is encrypted ({desc.media_type}); this puller does not decrypt",
            reason="image.layer_encrypted",
        )
    try:
        return LAYER_TYPES[desc.media_type]
    except KeyError:
        raise EvidenceError(
            f"layer {desc.digest} has unsupported media type {desc.media_type!r}",
            reason="image.layer_type",
        ) from None


@dataclass(frozen=True, slots=True)
class ImageConfig:
    raw: bytes
    os: str
    architecture: str
    diff_ids: tuple[str, ...]
    doc: dict[str, Any]


def parse_config(raw: bytes, manifest: ImageManifest, settings: OciSettings) -> ImageConfig:
    """The image config blob (already digest-checked): platform and ``rootfs.diff_ids``."""
    doc = _load(raw, settings.max_config_bytes)
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise _bad("config.rootfs.type must be 'layers'")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and DIGEST_RE.fullmatch(d) for d in diff_ids
    ):
        raise _bad("config.rootfs.diff_ids must be a list of digests")
    if len(diff_ids) != len(manifest.layers):
        raise _bad(f"config has {len(diff_ids)} diff_ids for {len(manifest.layers)} layers")
    os_, arch = doc.get("os"), doc.get("architecture")
    if not isinstance(os_, str) or not isinstance(arch, str):
        raise _bad("config.os / config.architecture missing")
    return ImageConfig(raw, os_, arch, tuple(diff_ids), doc)
