"""``trustpod image encrypt``: encrypt an image's layers (coco_keyprovider + skopeo's job) — I/O.

Source and destination use skopeo's transport syntax: ``oci:DIR[:TAG]`` (an OCI image layout)
or ``docker://HOST/REPO[:TAG|@DIGEST]`` (a registry; plain http only for hosts named insecure).
For each selected plain layer: a fresh layer key and nonce, AES-256-CTR + HMAC-SHA256
(``trustpod.oci.ocicrypt``), media type ``…+encrypted``, ``enc.pubopts``, and one recipient per
scheme: the CoCo annotation packet (``kid`` = the KBS resource holding the 32-byte KEK, A256GCM)
and/or JWE (RSA public keys). The config (and so ``rootfs.diff_ids``) is unchanged; the result is
an OCI manifest (docker v2s2 layer types are mapped to their OCI equivalents, as skopeo does).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from trustpod.errors import ConfigError, DependencyError, NotFoundError
from trustpod.oci.layout import tag_manifest, write_blob
from trustpod.oci.manifest import (
    OCI_MANIFEST,
    Descriptor,
    ImageManifest,
    digest_of,
    parse_manifest_or_index,
)
from trustpod.oci.ocicrypt import (
    ANNOTATION_JWE,
    ANNOTATION_PROVIDER_AA,
    ANNOTATION_PUBOPTS,
    ENCRYPTED_SUFFIX,
    LayerEncrypter,
    is_encrypted,
    new_private_options,
    wrap_packet,
)
from trustpod.oci.ocicrypt_jwe import jwe_encrypt
from trustpod.oci.reference import ImageReference, parse_reference
from trustpod.oci.registry import RegistryClient
from trustpod.oci.settings import OciSettings

__all__ = ["Recipients", "encrypt_image", "select_layers"]

_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_TO_OCI = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": (
        "application/vnd.oci.image.layer.v1.tar+gzip"
    ),
    "application/vnd.docker.container.image.v1+json": _OCI_CONFIG,
}
_ENCRYPTABLE = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
)
_REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True, slots=True)
class Recipients:
    """Who can open the layer keys: a KBS-held KEK (``kid``) and/or JWE RSA public keys."""

    kid: str | None = None
    kek: bytes | None = None
    jwe: tuple[rsa.RSAPublicKey, ...] = ()

    def __post_init__(self) -> None:
        if (self.kid is None) != (self.kek is None):
            raise ConfigError("a key URI needs its key and vice versa", reason="image.kek")
        if self.kid is None and not self.jwe:
            raise ConfigError(
                "no recipient: give --key-uri and/or --jwe-recipient", reason="image.recipients"
            )


def select_layers(spec: str | None, count: int) -> set[int]:
    """``--layers 0,-1`` (skopeo ``--encrypt-layer`` indices; negative from the end)."""
    if not spec:
        return set(range(count))
    out = set()
    for part in spec.split(","):
        try:
            i = int(part)
        except ValueError:
            raise ConfigError(
                f"--layers: {part!r} is not an index", reason="image.layers"
            ) from None
        if not -count <= i < count:
            raise ConfigError(
                f"--layers: {i} is out of range ({count} layers)", reason="image.layers"
            )
        out.add(i % count)
    return out


def _desc_json(d: Descriptor, media_type: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "mediaType": media_type or d.media_type,
        "digest": d.digest,
        "size": d.size,
    }
    if d.annotations:
        doc["annotations"] = dict(d.annotations)
    return doc


def _encrypt_blob(
    src: Path, work: Path, desc: Descriptor, rcpt: Recipients
) -> tuple[dict[str, Any], Path]:
    opts = new_private_options(desc.digest)
    enc = LayerEncrypter(opts)
    sha = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=work)
    tmp = Path(tmp_name)
    with os.fdopen(fd, "wb") as out, src.open("rb") as f:
        while chunk := f.read(1 << 20):
            data = enc.update(chunk)
            sha.update(data)
            out.write(data)
        tail, pub = enc.finish()
        sha.update(tail)
        out.write(tail)
        size = out.tell()
    ann = {k: v for k, v in desc.annotations}
    ann[ANNOTATION_PUBOPTS] = pub.to_annotation()
    if rcpt.kid is not None and rcpt.kek is not None:
        packet = wrap_packet(rcpt.kid, rcpt.kek, opts)
        ann[ANNOTATION_PROVIDER_AA] = base64.b64encode(packet.to_json()).decode()
    if rcpt.jwe:
        ann[ANNOTATION_JWE] = base64.b64encode(jwe_encrypt(opts.to_json(), rcpt.jwe)).decode()
    media = _TO_OCI.get(desc.media_type, desc.media_type) + ENCRYPTED_SUFFIX
    digest = f"sha256:{sha.hexdigest()}"
    return {"mediaType": media, "digest": digest, "size": size, "annotations": ann}, tmp


# -- sources ------------------------------------------------------------------------------------


def _split_oci(spec: str) -> tuple[Path, str]:
    body = spec[len("oci:") :]
    path, _, tag = body.partition(":")
    return Path(path), tag or "latest"


def _layout_manifest(layout: Path, tag: str, settings: OciSettings) -> tuple[ImageManifest, bytes]:
    try:
        index = json.loads((layout / "index.json").read_text())
    except (OSError, ValueError) as exc:
        raise NotFoundError(
            f"{layout} is not an OCI layout: {exc}", reason="image.not_found"
        ) from exc
    for m in index.get("manifests", []):
        if m.get("annotations", {}).get(_REF_NAME) == tag:
            raw = _blob_path(layout, m["digest"]).read_bytes()
            parsed = parse_manifest_or_index(raw, m.get("mediaType"), settings)
            if not isinstance(parsed, ImageManifest):
                raise ConfigError(
                    f"{layout}:{tag} is an index; give a manifest", reason="image.layout"
                )
            return parsed, _blob_path(layout, parsed.config.digest).read_bytes()
    raise NotFoundError(f"no tag {tag!r} in {layout}", reason="image.not_found")


def _blob_path(layout: Path, digest: str) -> Path:
    algo, hexpart = digest.split(":", 1)
    return layout / "blobs" / algo / hexpart


def _write_layout(layout: Path, tag: str, manifest: bytes, blobs: dict[str, Path | bytes]) -> None:
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    for digest, src in blobs.items():
        dest = _blob_path(layout, digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            dest.write_bytes(src)
        elif not dest.exists():  # content-addressed: an existing blob is the same bytes
            shutil.copyfile(src, dest)
    tag_manifest(layout, tag, write_blob(layout, manifest), len(manifest))


class _Pusher:
    """Monolithic blob uploads and a manifest PUT (distribution-spec push), no auth."""

    def __init__(self, image: ImageReference, settings: OciSettings, verify: Any) -> None:
        scheme = "http" if image.registry in settings.insecure_http_registries else "https"
        self.base = f"{scheme}://{image.registry}/v2/{image.repository}"
        self.image = image
        self.client = httpx.Client(verify=verify, timeout=settings.http_timeout_s)

    def _check(self, r: httpx.Response, what: str, ok: tuple[int, ...]) -> None:
        if r.status_code not in ok:
            raise DependencyError(
                f"registry answered {r.status_code} to {what}: {r.text[:300]}", reason="image.push"
            )

    def blob(self, digest: str, src: Path | bytes) -> None:
        if self.client.head(f"{self.base}/blobs/{digest}").status_code == 200:
            return
        r = self.client.post(f"{self.base}/blobs/uploads/")
        self._check(r, "a blob upload", (202,))
        loc = r.headers["location"]
        url = httpx.URL(loc) if loc.startswith("http") else httpx.URL(self.base).join(loc)
        url = url.copy_merge_params({"digest": digest})
        size = len(src) if isinstance(src, bytes) else src.stat().st_size
        body: bytes | Iterator[bytes] = src if isinstance(src, bytes) else _chunks(src)
        r = self.client.put(
            url,
            content=body,
            headers={"content-type": "application/octet-stream", "content-length": str(size)},
        )
        self._check(r, f"blob {digest}", (201,))

    def manifest(self, tag: str, raw: bytes) -> None:
        r = self.client.put(
            f"{self.base}/manifests/{tag}", content=raw, headers={"content-type": OCI_MANIFEST}
        )
        self._check(r, "the manifest", (201,))


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk


def encrypt_image(
    src: str,
    dst: str,
    recipients: Recipients,
    *,
    layers: str | None = None,
    settings: OciSettings | None = None,
    verify: Any = True,
) -> dict[str, Any]:
    """Encrypt ``src`` into ``dst``; returns a summary (manifest digest, encrypted layers)."""
    s = settings or OciSettings()
    with tempfile.TemporaryDirectory(prefix="trustpod-encrypt-") as tmp:
        work = Path(tmp)
        blob_of: dict[str, Path] = {}
        client: RegistryClient | None = None
        try:
            if src.startswith("oci:"):
                layout, tag = _split_oci(src)
                manifest, config = _layout_manifest(layout, tag, s)
                for d in manifest.layers:
                    blob_of[d.digest] = _blob_path(layout, d.digest)
            elif src.startswith("docker://"):
                client = RegistryClient(s)
                image = parse_reference(src[len("docker://") :])
                manifest = client.resolve(image).manifest
                config = client.get_blob(image, manifest.config, s.max_config_bytes)
                for d in manifest.layers:
                    path = work / d.digest.replace(":", "-")
                    client.fetch_blob(image, d, path)
                    blob_of[d.digest] = path
            else:
                raise ConfigError(
                    f"source {src!r}: use oci:DIR[:TAG] or docker://REF", reason="image.transport"
                )
        finally:
            if client is not None:
                client.close()
        chosen = select_layers(layers, len(manifest.layers))
        out_layers: list[dict[str, Any]] = []
        out_blobs: dict[str, Path | bytes] = {}
        encrypted = []
        for i, d in enumerate(manifest.layers):
            plain_type = _TO_OCI.get(d.media_type, d.media_type)
            if i not in chosen or is_encrypted(d.media_type):
                out_layers.append(_desc_json(d, plain_type))
                out_blobs[d.digest] = blob_of[d.digest]
                continue
            if plain_type not in _ENCRYPTABLE:
                raise ConfigError(
                    f"layer {i} has type {d.media_type}; cannot encrypt", reason="image.layer_type"
                )
            desc, path = _encrypt_blob(blob_of[d.digest], work, d, recipients)
            out_layers.append(desc)
            out_blobs[desc["digest"]] = path
            encrypted.append(i)
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _desc_json(manifest.config, _TO_OCI.get(manifest.config.media_type)),
            "layers": out_layers,
        }
        if manifest.annotations:
            doc["annotations"] = dict(manifest.annotations)
        raw = json.dumps(doc, separators=(",", ":")).encode()
        out_blobs[manifest.config.digest] = config
        if dst.startswith("oci:"):
            layout, tag = _split_oci(dst)
            _write_layout(layout, tag, raw, out_blobs)
        elif dst.startswith("docker://"):
            image = parse_reference(dst[len("docker://") :])
            pusher = _Pusher(image, s, verify)
            try:
                for digest, blob in out_blobs.items():
                    pusher.blob(digest, blob)
                pusher.manifest(image.tag or "latest", raw)
            finally:
                pusher.client.close()
        else:
            raise ConfigError(
                f"destination {dst!r}: use oci:DIR[:TAG] or docker://REF", reason="image.transport"
            )
        return {
            "manifest_digest": digest_of(raw),
            "encrypted_layers": encrypted,
            "destination": dst,
        }
