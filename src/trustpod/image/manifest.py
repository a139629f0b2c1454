"""The boot manifest: what a pod VM image is, how it boots and what its PCR 11 will be.

JSON, written by ``trustpod image build`` next to the image. Parsed once, strictly, into frozen
models; on load the recorded root hash and PCR 11 are recomputed from the command line and must
match, so a hand-edited manifest fails closed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from trustpod.errors import EvidenceError
from trustpod.image.cmdline import parse_cmdline
from trustpod.image.measure import KERNEL_BOOT_PCR, expected_pcr11

__all__ = ["MANIFEST_SCHEMA", "MAX_MANIFEST_BYTES", "BootManifest", "FileEntry"]

MANIFEST_SCHEMA = "trustpod.boot-manifest/v1"
#: a manifest is a few KiB; anything bigger is not one
MAX_MANIFEST_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def _get(obj: dict[str, Any], key: str, typ: type, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise EvidenceError(
            f"boot manifest: {where}{key} must be a {typ.__name__}", reason="image.manifest"
        )
    return value


def _hex(value: str, size: int, what: str) -> str:
    try:
        ok = len(bytes.fromhex(value)) == size
    except ValueError:
        ok = False
    if not ok:
        raise EvidenceError(
            f"boot manifest: {what} must be {size * 2} hex digits", reason="image.manifest"
        )
    return value.lower()


def _file(obj: dict[str, Any], key: str) -> FileEntry:
    sub = _get(obj, key, dict, "")
    return FileEntry(
        path=_get(sub, "path", str, f"{key}."),
        size=_get(sub, "size", int, f"{key}."),
        sha256=_hex(_get(sub, "sha256", str, f"{key}."), 32, f"{key}.sha256"),
    )


@dataclass(frozen=True, slots=True)
class BootManifest:
    cmdline: str
    root_image: FileEntry
    hash_device: FileEntry
    filesystem: str
    root_hash: str
    pcr11_sha256: str
    osrel: str | None = None

    @classmethod
    def create(
        cls,
        *,
        cmdline: str,
        root_image: FileEntry,
        hash_device: FileEntry,
        filesystem: str,
        osrel: str | None = None,
    ) -> BootManifest:
        parsed = parse_cmdline(cmdline)
        pcr = expected_pcr11(cmdline, osrel=osrel.encode() if osrel is not None else None)
        return cls(
            cmdline, root_image, hash_device, filesystem, parsed.root_hash.hex(), pcr.hex(), osrel
        )

    @property
    def measured_sections(self) -> list[str]:
        return [".osrel", ".cmdline"] if self.osrel else [".cmdline"]

    def to_json(self) -> dict[str, Any]:
        p = parse_cmdline(self.cmdline).params
        return {
            "schema": MANIFEST_SCHEMA,
            "cmdline": self.cmdline,
            "osrel": self.osrel,
            "root_image": {**self.root_image.to_json(), "filesystem": self.filesystem},
            "hash_device": self.hash_device.to_json(),
            "verity": {
                "root_hash": self.root_hash,
                "algorithm": p.algorithm,
                "hash_type": p.hash_type,
                "data_block_size": p.data_block_size,
                "hash_block_size": p.hash_block_size,
                "data_blocks": p.data_blocks,
                "hash_offset": p.hash_offset,
                "salt": p.salt.hex(),
                "uuid": p.uuid_text if p.superblock else None,
            },
            "measurement": {
                "model": "systemd-stub UKI sections into PCR 11 (ADR 0800)",
                "pcr": KERNEL_BOOT_PCR,
                "bank": "sha256",
                "sections": self.measured_sections,
                "pcr11": self.pcr11_sha256,
            },
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def loads(cls, raw: str | bytes) -> BootManifest:
        if len(raw) > MAX_MANIFEST_BYTES:
            raise EvidenceError("boot manifest is too large", reason="image.manifest")
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EvidenceError("boot manifest is not JSON", reason="image.manifest") from exc
        if not isinstance(obj, dict) or obj.get("schema") != MANIFEST_SCHEMA:
            raise EvidenceError(
                f"not a boot manifest (schema must be {MANIFEST_SCHEMA!r})",
                reason="image.manifest",
            )
        osrel = obj.get("osrel")
        if osrel is not None and not isinstance(osrel, str):
            raise EvidenceError("boot manifest: osrel must be a string", reason="image.manifest")
        root = _get(obj, "root_image", dict, "")
        built = cls.create(
            cmdline=_get(obj, "cmdline", str, ""),
            root_image=_file(obj, "root_image"),
            hash_device=_file(obj, "hash_device"),
            filesystem=_get(root, "filesystem", str, "root_image."),
            osrel=osrel,
        )
        # (1) recorded values must be what the command line implies (fail closed)
        verity = _get(obj, "verity", dict, "")
        measurement = _get(obj, "measurement", dict, "")
        if (
            _hex(
                _get(verity, "root_hash", str, "verity."),
                len(bytes.fromhex(built.root_hash)),
                "root_hash",
            )
            != built.root_hash
        ):
            raise EvidenceError(
                "boot manifest: verity.root_hash differs from roothash= in cmdline",
                reason="image.manifest_inconsistent",
            )
        if _hex(_get(measurement, "pcr11", str, "measurement."), 32, "pcr11") != built.pcr11_sha256:
            raise EvidenceError(
                "boot manifest: measurement.pcr11 is not the PCR 11 of its cmdline/osrel",
                reason="image.manifest_inconsistent",
                fix="regenerate the manifest with `trustpod image build`",
            )
        return built
