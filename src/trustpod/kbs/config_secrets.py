"""``[[plugins]] name = "resource"``: where resources live (reference §3.1, upstream
``kbs/docs/config.md`` and ``vault_kv.md``).

* ``storage_backend_type = "kvstorage"`` (default): the ``repository`` namespace of
  ``[storage_backend]``.
* ``storage_backend_type = "Vault"``: HashiCorp Vault KV, upstream's option names (``vault_url``,
  ``token``, ``mount_path = "secret"``, ``verify_ssl``, ``ca_certs``) plus trustpod's
  ``kv_version`` (2 by default; upstream speaks KV v1 only), ``token_env`` (read the token from
  an environment variable, e.g. one filled from a Kubernetes Secret) and ``timeout``.
  ``verify_ssl`` defaults to true (upstream: false; docs/compat.md).
* ``storage_backend_type = "AzureKeyVault"`` (trustpod's; upstream has none): ``vault_url``,
  ``credential`` (``default`` = azure-identity's DefaultAzureCredential chain: environment,
  workload identity, managed identity; or ``client_secret`` with ``tenant_id``, ``client_id``,
  ``client_secret_env``), ``authority_host`` (sovereign clouds), ``ca_certs``, ``timeout``.

Every other namespace (sessions, policies, reference values, keys) stays in
``[storage_backend]``. Secrets never appear in the config itself when ``*_env`` is used.
"""

from __future__ import annotations

import os

from trustpod.errors import ConfigError
from trustpod.kbs._toml import Table
from trustpod.storage.secret_settings import (
    DEFAULT_TIMEOUT_S,
    AzureKeyVaultConfig,
    ResourceBackend,
    VaultConfig,
)

__all__ = [
    "AzureKeyVaultConfig",
    "ResourceBackend",
    "VaultConfig",
    "parse_resource_plugin",
]

_AZURE_CREDENTIALS = ("default", "client_secret")


def _env(t: Table, key: str) -> str | None:
    name = t.text(key)
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise ConfigError(
            f"{t.source}: {key} = {name!r} but that environment variable is empty or unset",
            reason="config.secret_env",
            fix=f"export {name}=... (e.g. from a Kubernetes Secret)",
        )
    return value


def _https_url(t: Table, what: str) -> str:
    url = t.text("vault_url")
    if not url or not url.startswith(("https://", "http://")):
        raise ConfigError(
            f'{t.source}: {what} needs vault_url = "https://..."',
            reason="config.missing",
            fix='e.g. vault_url = "https://vault.example:8200"',
        )
    return url.rstrip("/")


def _vault(t: Table) -> VaultConfig:
    url = _https_url(t, 'storage_backend_type = "Vault"')
    token = t.text("token")
    from_env = _env(t, "token_env")
    if (token is None) == (from_env is None):
        raise ConfigError(
            f"{t.source}: the Vault plugin needs exactly one of token or token_env",
            reason="config.missing",
            fix='token_env = "VAULT_TOKEN" keeps the token out of the config file',
        )
    kv = t.integer("kv_version", 2, minimum=1)
    if kv not in (1, 2):
        raise ConfigError(
            f"{t.source}: kv_version = {kv} (Vault KV engines are version 1 or 2)",
            reason="config.invalid",
        )
    return VaultConfig(
        vault_url=url,
        token=str(token or from_env),
        mount_path=(t.text("mount_path", "secret") or "secret").strip("/"),
        kv_version=kv or 2,
        verify_ssl=t.flag("verify_ssl", True),
        ca_certs=t.paths("ca_certs"),
        timeout_s=t.integer("timeout", DEFAULT_TIMEOUT_S, minimum=1) or DEFAULT_TIMEOUT_S,
    )


def _azure(t: Table) -> AzureKeyVaultConfig:
    url = _https_url(t, 'storage_backend_type = "AzureKeyVault"')
    if not url.startswith("https://"):
        raise ConfigError(
            f"{t.source}: Azure Key Vault is HTTPS only (vault_url = {url!r})",
            reason="config.invalid",
        )
    credential = t.text("credential", "default") or "default"
    if credential not in _AZURE_CREDENTIALS:
        raise ConfigError(
            f"{t.source}: credential = {credential!r} is not supported",
            reason="config.invalid",
            fix='use "default" (environment / workload identity / managed identity) or '
            '"client_secret" with tenant_id, client_id and client_secret_env',
        )
    cfg = AzureKeyVaultConfig(
        vault_url=url,
        credential=credential,
        tenant_id=t.text("tenant_id"),
        client_id=t.text("client_id"),
        client_secret=_env(t, "client_secret_env"),
        authority_host=t.text("authority_host"),
        ca_certs=t.paths("ca_certs"),
        timeout_s=t.integer("timeout", DEFAULT_TIMEOUT_S, minimum=1) or DEFAULT_TIMEOUT_S,
    )
    if credential == "client_secret" and not (
        cfg.tenant_id and cfg.client_id and cfg.client_secret
    ):
        raise ConfigError(
            f'{t.source}: credential = "client_secret" needs tenant_id, client_id and '
            "client_secret_env",
            reason="config.missing",
        )
    return cfg


def parse_resource_plugin(t: Table) -> ResourceBackend | None:
    """The backend of a ``[[plugins]] name = "resource"`` table (None: ``kvstorage``)."""
    kind = t.text("storage_backend_type", "kvstorage") or "kvstorage"
    backend: ResourceBackend | None
    if kind in ("kvstorage", "KvStorage"):
        backend = None
    elif kind in ("Vault", "vault"):
        backend = _vault(t)
    elif kind in ("AzureKeyVault", "azure_key_vault"):
        backend = _azure(t)
    else:
        raise ConfigError(
            f"{t.source}: resource storage_backend_type {kind!r} is not supported",
            reason="config.unsupported",
            fix='use "kvstorage" ([storage_backend]), "Vault" or "AzureKeyVault"',
        )
    t.done()
    return backend
