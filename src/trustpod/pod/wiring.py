"""Composition for ``trustpod pod``: config file → store + provider."""

from __future__ import annotations

import tomllib
from pathlib import Path

from trustpod.errors import ConfigError
from trustpod.pod.config import PodConfig, parse_pod_config
from trustpod.pod.provider import Provider
from trustpod.pod.store import PodStore, default_store_dir

__all__ = ["load_config", "make_provider", "make_store"]


def load_config(path: Path | None) -> PodConfig:
    if path is None:
        return PodConfig()
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}", reason="pod.config") from exc
    return parse_pod_config(raw, str(path))


def make_store(config: PodConfig, override: Path | None = None) -> PodStore:
    return PodStore(override or config.store or default_store_dir())


def make_provider(name: str, config: PodConfig, store: PodStore) -> Provider:
    if name == "sandbox":
        from trustpod.pod.providers.sandbox import SandboxProvider, SandboxSettings

        s = config.sandbox
        local = s.get("local_images")
        return SandboxProvider(
            SandboxSettings(
                vm_root=Path(s.get("vm_root", store.root / ".vms")),
                emulator_dir=Path(s.get("emulator_dir", store.root / ".emulator")),
                attester=str(s.get("attester", "emulated-az-snp-vtpm")),
                local_images=None if local is None else Path(local),
                stop_timeout_s=float(s.get("stop_timeout_s", 15.0)),
            )
        )
    if name == "azure":
        try:
            from trustpod.pod.providers.azure import AzureProvider, AzureSettings
        except ImportError as exc:
            raise ConfigError(
                f"the azure provider needs the Azure SDK: {exc}",
                reason="pod.azure_sdk",
                fix="pip install 'trustpod[azure]'",
            ) from exc
        return AzureProvider(AzureSettings.from_config(config.azure))
    if name == "qemu":
        from trustpod.pod.providers.qemu import qemu_provider

        return qemu_provider(config.qemu, store.root / ".vms-qemu")
    raise ConfigError(
        f"unknown provider {name!r}", reason="pod.provider", fix="sandbox, azure or qemu"
    )
