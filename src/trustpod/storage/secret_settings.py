"""Settings of the external secret stores that can hold resources (parsed from ``[[plugins]]``
by ``trustpod.kbs.config_secrets``): HashiCorp Vault KV and Azure Key Vault."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "AzureKeyVaultConfig",
    "ResourceBackend",
    "VaultConfig",
    "ca_bundle",
]

DEFAULT_TIMEOUT_S = 10


@dataclass(frozen=True, slots=True)
class VaultConfig:
    vault_url: str
    token: str
    mount_path: str = "secret"
    kv_version: int = 2
    verify_ssl: bool = True
    ca_certs: tuple[Path, ...] = ()
    timeout_s: int = DEFAULT_TIMEOUT_S

    def __repr__(self) -> str:  # never print the token
        return (
            f"VaultConfig({self.vault_url!r}, mount_path={self.mount_path!r}, kv={self.kv_version})"
        )


@dataclass(frozen=True, slots=True)
class AzureKeyVaultConfig:
    vault_url: str
    credential: str = "default"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    authority_host: str | None = None
    ca_certs: tuple[Path, ...] = ()
    timeout_s: int = DEFAULT_TIMEOUT_S

    def __repr__(self) -> str:
        return f"AzureKeyVaultConfig({self.vault_url!r}, credential={self.credential!r})"


ResourceBackend = VaultConfig | AzureKeyVaultConfig


def ca_bundle(ca_certs: tuple[Path, ...], prefix: str) -> str:
    """One path for the HTTP clients' ``verify`` setting: the file itself when there is one,
    else the files concatenated into a temporary bundle named ``<prefix>...`` (they take one)."""
    if len(ca_certs) == 1:
        return str(ca_certs[0])
    import tempfile

    data = b"".join(p.read_bytes() for p in ca_certs)
    with tempfile.NamedTemporaryFile("wb", prefix=prefix, delete=False) as f:
        f.write(data)
    return f.name
