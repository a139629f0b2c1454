"""Every limit of the image puller as a named setting with a safe default (pure)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["OciSettings", "Platform", "host_platform"]

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True, slots=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def __str__(self) -> str:
        tail = f"/{self.variant}" if self.variant else ""
        return f"{self.os}/{self.architecture}{tail}"


def host_platform() -> Platform:
    machine = os.uname().machine.lower()  # what platform.machine() gives, without its import
    return Platform("linux", _ARCH.get(machine, machine))


@dataclass(frozen=True, slots=True)
class OciSettings:
    """Limits and switches for one puller (CLI flags and ``[image]`` in cdh.toml set some)."""

    platform: Platform = field(default_factory=host_platform)
    #: Manifests, indexes and image configs larger than this are refused (containers/image: 4 MiB).
    max_manifest_bytes: int = 4 * 1024 * 1024
    max_config_bytes: int = 4 * 1024 * 1024
    max_index_entries: int = 1024
    max_layers: int = 128
    #: One compressed layer / the whole image (compressed) / everything unpacked.
    max_layer_bytes: int = 8 * 1024**3
    max_image_bytes: int = 16 * 1024**3
    max_unpacked_bytes: int = 32 * 1024**3
    max_tar_entries: int = 1_000_000
    #: Layers downloaded at once (``[image] max_concurrent_layer_downloads_per_image``, 3).
    max_concurrent_layer_downloads: int = 3
    max_path_bytes: int = 4096
    #: One tar header record (pax extended header, GNU long name, sparse map); Go's archive/tar,
    #: which containerd and image-rs' peers use, caps these at 1 MiB (``maxSpecialFileSize``).
    max_tar_header_bytes: int = 1024 * 1024
    #: Signatures read per image, and the size of each (simple signing / cosign layer).
    max_signatures: int = 64
    max_signature_bytes: int = 4 * 1024 * 1024
    max_policy_bytes: int = 1024 * 1024
    max_key_bytes: int = 1024 * 1024
    #: HTTP: timeout per request (s), redirects followed, token response size.
    http_timeout_s: float = 60.0
    max_redirects: int = 5
    max_token_bytes: int = 1024 * 1024
    chunk_bytes: int = 1024 * 1024
    #: Decompressed chunks (<= 4 MiB each) a helper thread may run ahead of the tar walk
    #: (decompress + diff_id hash on one core, tar + file writes on another); 0 = no thread.
    decompress_ahead_chunks: int = 4
    #: Registries spoken to over plain http (named insecure: warned at start).
    insecure_http_registries: frozenset[str] = frozenset()
    #: Extra PEM root certificates for registry TLS (``[image] extra_root_certificates``).
    extra_root_certificates: tuple[str, ...] = ()
