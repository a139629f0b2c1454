"""Write an OCI image layout (image-spec ``image-layout.md``) from directory trees — I/O.

For tests, benchmarks and building small images without a container engine:
``tar_tree(root)`` makes a reproducible layer tar (sorted, numeric owners, fixed mtime);
``write_layout(dir, [layer tars], tag=...)`` compresses them (gzip or zstd), writes the blobs,
the config (``rootfs.diff_ids``), the manifest and ``index.json``; ``skopeo copy oci:DIR:TAG
docker://…`` pushes it.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import zstandard

from trustpod.oci.manifest import digest_of

__all__ = ["tag_manifest", "tar_tree", "write_blob", "write_layout"]

_REF_NAME = "org.opencontainers.image.ref.name"
_LAYER_TYPE = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "": "application/vnd.oci.image.layer.v1.tar",
}


def tar_tree(root: Path, *, mtime: int = 0) -> bytes:
    """A layer tar of ``root`` (entries sorted, uid/gid 0, mtime fixed)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                full = Path(dirpath) / name
                info = tar.gettarinfo(str(full), arcname=str(full.relative_to(root)))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = mtime
                if info.isreg():
                    with full.open("rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def write_blob(layout: Path, data: bytes) -> str:
    """Store ``data`` as a sha256 blob of ``layout``; returns its digest."""
    digest = digest_of(data)
    path = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def _compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


def write_layout(
    layout: Path,
    layers: list[bytes],
    *,
    tag: str = "latest",
    compression: str = "gzip",
    architecture: str = "amd64",
    cmd: list[str] | None = None,
) -> str:
    """Write (or add a tag to) an OCI layout; returns the manifest digest."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    descs, diff_ids = [], []
    for tar in layers:
        blob = _compress(tar, compression)
        descs.append(
            {
                "mediaType": _LAYER_TYPE[compression],
                "digest": write_blob(layout, blob),
                "size": len(blob),
            }
        )
        diff_ids.append(digest_of(tar))
    config = json.dumps(
        {
            "architecture": architecture,
            "os": "linux",
            "config": {"Cmd": cmd or ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": write_blob(layout, config),
                "size": len(config),
            },
            "layers": descs,
        }
    ).encode()
    mdigest = write_blob(layout, manifest)
    tag_manifest(layout, tag, mdigest, len(manifest))
    return mdigest


def tag_manifest(layout: Path, tag: str, digest: str, size: int) -> None:
    """Point ``tag`` in the layout's ``index.json`` at the image manifest ``digest`` (``size``
    bytes): an entry with that ``org.opencontainers.image.ref.name`` is replaced, others kept;
    a layout without an index gets a new one."""
    index_path = layout / "index.json"
    index: dict[str, Any] = (
        json.loads(index_path.read_text())
        if index_path.exists()
        else {"schemaVersion": 2, "manifests": []}
    )
    index["manifests"] = [
        m for m in index["manifests"] if m.get("annotations", {}).get(_REF_NAME) != tag
    ]
    index["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "annotations": {_REF_NAME: tag},
        }
    )
    index_path.write_text(json.dumps(index))
