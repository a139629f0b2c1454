"""HashiCorp Vault KV as the resource store (upstream ``kbs/.../resource/vault_kv.rs`` layout), via
``hvac``.

Layout, as upstream: resource ``repo/type/tag`` is the Vault path ``repo/type/tag`` under
``mount_path``; the secret's ``data`` field holds the value base64-encoded (values are bytes;
Vault stores strings). Upstream speaks KV v1 only; trustpod speaks v2 (default) and v1. With v2,
``put(..., overwrite=False)`` is a check-and-set write (``cas = 0``: only if absent, atomic) and
``delete`` removes the metadata and every version. Only the ``repository`` namespace lives here.

Errors: a missing path is ``None`` (404 to the client); anything else (unreachable, sealed,
permission denied, TLS) is ``DependencyError`` naming HashiCorp Vault, which the KBS answers
with 503. The token is never logged.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from trustpod.errors import ConfigError, DependencyError
from trustpod.storage.secret_settings import VaultConfig, ca_bundle

__all__ = ["RESOURCE_NAMESPACE", "VaultKvStore"]

RESOURCE_NAMESPACE = "repository"
_FIELD = "data"
_log = logging.getLogger(__name__)


class VaultKvStore:
    """``KeyValueStore`` (namespace ``repository`` only) over a Vault KV v1/v2 mount."""

    backend_name = "HashiCorp Vault"

    def __init__(self, cfg: VaultConfig) -> None:
        import hvac
        import requests

        self._hvac: Any = hvac
        self._requests: Any = requests
        self._cfg = cfg
        verify: bool | str = cfg.verify_ssl
        if not cfg.verify_ssl and cfg.vault_url.startswith("https://"):
            _log.warning(
                "Vault plugin: verify_ssl = false: the Vault server certificate is NOT verified "
                "(anyone on the path can read and change resources). Testing only."
            )
        elif cfg.vault_url.startswith("http://"):
            _log.warning("Vault plugin: %s is plain HTTP (testing only)", cfg.vault_url)
        if cfg.verify_ssl and cfg.ca_certs:
            verify = ca_bundle(cfg.ca_certs, "trustpod-vault-ca-")
        self._client: Any = hvac.Client(
            url=cfg.vault_url, token=cfg.token, verify=verify, timeout=cfg.timeout_s
        )
        kv = self._client.secrets.kv
        self._kv: Any = kv.v2 if cfg.kv_version == 2 else kv.v1

    def _fail(self, what: str, exc: BaseException) -> DependencyError:
        return DependencyError(
            f"HashiCorp Vault {what} failed ({self._cfg.vault_url}, mount "
            f"{self._cfg.mount_path!r}): {type(exc).__name__}: {str(exc)[:300]}",
            reason=f"storage.vault.{what}",
            fix="check the Vault plugin settings (vault_url, token, mount_path, kv_version) and "
            "that Vault is unsealed and reachable",
        )

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, mount_point=self._cfg.mount_path, **kwargs)
        except self._hvac.exceptions.InvalidPath:
            return None
        except (self._hvac.exceptions.VaultError, self._requests.RequestException) as exc:
            raise self._fail(what, exc) from exc

    @staticmethod
    def _check(namespace: str) -> None:
        if namespace != RESOURCE_NAMESPACE:
            raise ConfigError(
                f"the Vault backend holds resources only, not {namespace!r}",
                reason="storage.namespace",
            )

    def get(self, namespace: str, key: str) -> bytes | None:
        self._check(namespace)
        if self._cfg.kv_version == 2:
            resp = self._call(
                "read", self._kv.read_secret_version, path=key, raise_on_deleted_version=True
            )
            data = None if resp is None else resp.get("data", {}).get("data")
        else:
            resp = self._call("read", self._kv.read_secret, path=key)
            data = None if resp is None else resp.get("data")
        if data is None:
            return None
        value = data.get(_FIELD) if isinstance(data, dict) else None
        if not isinstance(value, str):
            raise DependencyError(
                f"HashiCorp Vault secret {key[:200]!r} has no string {_FIELD!r} field",
                reason="storage.vault.layout",
                fix=f"store the value base64-encoded in the {_FIELD!r} field (upstream's layout)",
            )
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DependencyError(
                f"HashiCorp Vault secret {key[:200]!r}: {_FIELD!r} is not base64",
                reason="storage.vault.layout",
            ) from exc

    def put(self, namespace: str, key: str, value: bytes, *, overwrite: bool = True) -> bool:
        self._check(namespace)
        secret = {_FIELD: base64.b64encode(bytes(value)).decode()}
        if self._cfg.kv_version == 1:
            if not overwrite and self.get(namespace, key) is not None:
                return False  # KV v1 has no check-and-set: best effort
            self._call("write", self._kv.create_or_update_secret, path=key, secret=secret)
            return True
        try:
            self._kv.create_or_update_secret(
                path=key,
                secret=secret,
                cas=None if overwrite else 0,
                mount_point=self._cfg.mount_path,
            )
        except self._hvac.exceptions.InvalidRequest as exc:
            if not overwrite and "check-and-set" in str(exc):
                return False
            raise self._fail("write", exc) from exc
        except (self._hvac.exceptions.VaultError, self._requests.RequestException) as exc:
            raise self._fail("write", exc) from exc
        return True

    def delete(self, namespace: str, key: str) -> bool:
        self._check(namespace)
        if self.get(namespace, key) is None:
            return False
        if self._cfg.kv_version == 2:
            self._call("delete", self._kv.delete_metadata_and_all_versions, path=key)
        else:
            self._call("delete", self._kv.delete_secret, path=key)
        return True

    def _list(self, prefix: str) -> list[str]:
        resp = self._call("list", self._kv.list_secrets, path=prefix)
        if resp is None:
            return []
        keys = resp.get("data", {}).get("keys", [])
        return [str(k) for k in keys if isinstance(k, str)]

    def list_keys(self, namespace: str) -> list[str]:
        """Every ``repo/type/tag`` (three LIST levels, as the layout has three segments)."""
        self._check(namespace)
        out: list[str] = []
        for repo in self._list(""):
            if not repo.endswith("/"):
                continue
            for typ in self._list(repo):
                if not typ.endswith("/"):
                    continue
                out += [f"{repo}{typ}{tag}" for tag in self._list(repo + typ) if "/" not in tag]
        return sorted(out)

    def close(self) -> None:
        adapter = getattr(self._client, "adapter", None)
        session = getattr(adapter, "session", None)
        if session is not None:
            session.close()
