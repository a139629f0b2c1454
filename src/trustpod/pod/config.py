"""The ``trustpod pod`` config TOML (pure): provider settings, mirroring CAA's peer-pods ConfigMap.

::

    [pod]
    provider = "sandbox"            # CAA: CLOUD_PROVIDER
    burst = "never"                 # always | never | when-local-full
    local_capacity = 10             # CAA: PEERPODS_LIMIT_PER_NODE
    store = "/var/lib/trustpod/pods"

    [sandbox]
    vm_root = "..."                 # pod VM directories
    emulator_dir = "..."            # emulated vendor chain (the KBS trusts vendor/roots.pem)
    attester = "emulated-az-snp-vtpm"
    local_images = "..."            # optional: images shipped in the pod VM image

    [azure]                         # CAA's names, see trustpod.pod.providers.azure
    AZURE_SUBSCRIPTION_ID = "..."
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustpod.errors import ConfigError

__all__ = ["BURST_RULES", "PodConfig", "choose_provider", "parse_pod_config"]

BURST_RULES = ("always", "never", "when-local-full")
_POD_KEYS = {"provider", "burst", "local_capacity", "store"}
_SANDBOX_KEYS = {"vm_root", "emulator_dir", "attester", "local_images", "stop_timeout_s"}


@dataclass(frozen=True, slots=True)
class PodConfig:
    provider: str = "sandbox"
    burst: str = "never"
    local_capacity: int = 10
    store: Path | None = None
    sandbox: Mapping[str, Any] = field(default_factory=dict)
    azure: Mapping[str, Any] = field(default_factory=dict)
    qemu: Mapping[str, Any] = field(default_factory=dict)


def _bad(key: str, problem: str, source: str) -> ConfigError:
    return ConfigError(f"{source}: {key} {problem}", reason="pod.config")


def parse_pod_config(raw: Mapping[str, Any], source: str = "pod config") -> PodConfig:
    for top in raw:
        if top not in ("pod", "sandbox", "azure", "qemu"):
            raise _bad(f"[{top}]", "is not a section (pod, sandbox, azure, qemu)", source)
    pod = raw.get("pod", {})
    for key in pod:
        if key not in _POD_KEYS:
            raise _bad(f"pod.{key}", "is not a setting", source)
    sandbox = raw.get("sandbox", {})
    for key in sandbox:
        if key not in _SANDBOX_KEYS:
            raise _bad(f"sandbox.{key}", "is not a setting", source)
    burst = pod.get("burst", "never")
    if burst not in BURST_RULES:
        raise _bad("pod.burst", f"must be one of {', '.join(BURST_RULES)}", source)
    cap = pod.get("local_capacity", 10)
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
        raise _bad("pod.local_capacity", "must be an integer >= 0", source)
    provider = pod.get("provider", "sandbox")
    if provider not in ("sandbox", "azure", "qemu"):
        raise _bad("pod.provider", "must be sandbox, azure or qemu", source)
    store = pod.get("store")
    return PodConfig(
        provider=provider,
        burst=burst,
        local_capacity=cap,
        store=None if store is None else Path(store),
        sandbox=dict(sandbox),
        azure=dict(raw.get("azure", {})),
        qemu=dict(raw.get("qemu", {})),
    )


def choose_provider(config: PodConfig, requested: str | None, local_running: int) -> str:
    """``--provider`` (or the pod's runtime class) wins; else the burst rule: ``always`` →
    azure, ``never`` → the configured provider, ``when-local-full`` → azure once
    ``local_running >= local_capacity``."""
    if requested:
        return requested
    if config.burst == "always":
        return "azure"
    if config.burst == "when-local-full" and local_running >= config.local_capacity:
        return "azure"
    return config.provider
