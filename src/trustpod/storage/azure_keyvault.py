"""Azure Key Vault secrets as the resource store, via ``azure-keyvault-secrets`` and
``azure-identity`` (trustpod's own backend: upstream Trustee has none for Azure).

Layout: Key Vault secret names allow only ``[0-9a-zA-Z-]{1,127}`` and are case-insensitive, while
resource paths are case-sensitive ``repo/type/tag`` with ``_`` and ``.``; so the secret name is
``kbs-`` + the path in lowercase base32 without padding (bijective, fits paths up to 76 bytes),
and the path is also kept in the tag ``trustpod-path`` for people browsing the vault. The value is
the resource base64-encoded (Key Vault values are strings), content type
``application/octet-stream;base64``. ``delete`` deletes and purges (soft-deleted names block a
new secret of the same name). ``put(..., overwrite=False)`` is read-then-write (Key Vault has no
create-if-absent). Only the ``repository`` namespace lives here.

Errors: a missing secret is ``None`` (404); anything else (authentication, network, TLS, throttling
after the SDK's retries) is ``DependencyError`` naming Azure Key Vault (503).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from trustpod.errors import ConfigError, DependencyError, NotFoundError
from trustpod.storage.secret_settings import AzureKeyVaultConfig, ca_bundle

__all__ = ["MAX_PATH_BYTES", "AzureKeyVaultStore", "path_from_name", "secret_name"]

RESOURCE_NAMESPACE = "repository"
PREFIX = "kbs-"
PATH_TAG = "trustpod-path"
CONTENT_TYPE = "application/octet-stream;base64"
MAX_PATH_BYTES = (127 - len(PREFIX)) * 5 // 8


def secret_name(path: str) -> str:
    raw = path.encode()
    if len(raw) > MAX_PATH_BYTES:
        raise NotFoundError(
            f"resource path longer than {MAX_PATH_BYTES} bytes cannot be an Azure Key Vault "
            "secret name",
            reason="storage.azure_keyvault.path_length",
            fix="use shorter repository/type/tag names with the AzureKeyVault backend",
        )
    return PREFIX + base64.b32encode(raw).decode().rstrip("=").lower()


def path_from_name(name: str) -> str | None:
    """The resource path of a secret named by ``secret_name`` (None for other secrets)."""
    if not name.lower().startswith(PREFIX):
        return None
    body = name[len(PREFIX) :].upper()
    try:
        return base64.b32decode(body + "=" * (-len(body) % 8)).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


class AzureKeyVaultStore:
    """``KeyValueStore`` (namespace ``repository`` only) over one Key Vault."""

    backend_name = "Azure Key Vault"

    def __init__(self, cfg: AzureKeyVaultConfig, *, credential: Any = None) -> None:
        from azure.core import exceptions
        from azure.keyvault.secrets import SecretClient

        self._exc: Any = exceptions
        self._cfg = cfg
        kwargs: dict[str, Any] = {"connection_timeout": cfg.timeout_s}
        kwargs["read_timeout"] = cfg.timeout_s
        if cfg.ca_certs:
            kwargs["connection_verify"] = ca_bundle(cfg.ca_certs, "trustpod-akv-ca-")
        self._credential = credential or _credential(cfg, kwargs)
        self._client: Any = SecretClient(cfg.vault_url, self._credential, **kwargs)

    def _fail(self, what: str, exc: BaseException) -> DependencyError:
        return DependencyError(
            f"Azure Key Vault {what} failed ({self._cfg.vault_url}): "
            f"{type(exc).__name__}: {str(exc)[:300]}",
            reason=f"storage.azure_keyvault.{what}",
            fix="check the AzureKeyVault plugin settings (vault_url, credential) and the "
            "identity's secret permissions (get, set, list, delete, purge)",
        )

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._exc.ResourceNotFoundError:
            return None
        except (self._exc.AzureError, OSError) as exc:
            raise self._fail(what, exc) from exc
        except Exception as exc:  # azure-identity raises its own types (CredentialUnavailable...)
            if type(exc).__module__.startswith(("azure.", "msal")):
                raise self._fail(what, exc) from exc
            raise

    @staticmethod
    def _check(namespace: str) -> None:
        if namespace != RESOURCE_NAMESPACE:
            raise ConfigError(
                f"the Azure Key Vault backend holds resources only, not {namespace!r}",
                reason="storage.namespace",
            )

    def get(self, namespace: str, key: str) -> bytes | None:
        self._check(namespace)
        secret = self._call("read", self._client.get_secret, secret_name(key))
        if secret is None or secret.value is None:
            return None
        try:
            return base64.b64decode(secret.value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DependencyError(
                f"Azure Key Vault secret for {key[:200]!r} is not base64",
                reason="storage.azure_keyvault.layout",
                fix="write resources through the KBS admin API (values are base64 in the vault)",
            ) from exc

    def put(self, namespace: str, key: str, value: bytes, *, overwrite: bool = True) -> bool:
        self._check(namespace)
        if not overwrite and self.get(namespace, key) is not None:
            return False
        self._call(
            "write",
            self._client.set_secret,
            secret_name(key),
            base64.b64encode(bytes(value)).decode(),
            content_type=CONTENT_TYPE,
            tags={PATH_TAG: key},
        )
        return True

    def delete(self, namespace: str, key: str) -> bool:
        self._check(namespace)
        name = secret_name(key)
        poller = self._call("delete", self._client.begin_delete_secret, name)
        if poller is None:
            return False
        self._call("delete", poller.wait)
        self._call("delete", self._client.purge_deleted_secret, name)
        return True

    def list_keys(self, namespace: str) -> list[str]:
        self._check(namespace)
        props = self._call("list", lambda: list(self._client.list_properties_of_secrets()))
        paths = (path_from_name(p.name) for p in props or [] if p.name)
        return sorted(p for p in paths if p is not None)

    def close(self) -> None:
        self._client.close()
        close = getattr(self._credential, "close", None)
        if close is not None:
            close()


def _credential(cfg: AzureKeyVaultConfig, transport_kwargs: dict[str, Any]) -> Any:
    from azure import identity

    kwargs = {k: v for k, v in transport_kwargs.items() if k == "connection_verify"}
    if cfg.authority_host:  # sovereign / private cloud: the configured authority is trusted
        kwargs["authority"] = cfg.authority_host
        kwargs["disable_instance_discovery"] = True
    if cfg.credential == "client_secret":
        assert cfg.tenant_id and cfg.client_id and cfg.client_secret  # checked by the parser
        return identity.ClientSecretCredential(
            cfg.tenant_id, cfg.client_id, cfg.client_secret, **kwargs
        )
    return identity.DefaultAzureCredential(**kwargs)
