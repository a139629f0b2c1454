"""Confidential data hub (guest-and-control-plane.md §3): resources, credentials, sealed secrets.

``ConfidentialDataHub`` talks to the KBS named in ``cdh.toml`` (``[kbc] url`` / ``kbs_cert``);
since ``cdh.toml`` travels in the initdata, a pod chooses its own KBS and the choice is measured.

* ``start()`` fetches every ``[[credentials]]`` entry into its file (0600, written atomically).
* ``get_resource(uri)``: ``kbs:///repo/type/tag`` or ``kbs+plugin://…`` → the KBS resource bytes.
* ``unseal_secret`` / ``unseal_env`` / ``unseal_volume``: ``trustpod.guest.secrets``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from trustpod.errors import DependencyError
from trustpod.guest.config import CdhConfig
from trustpod.guest.secrets import ResourceFetcher, SealedSecretService
from trustpod.guest.uri import parse_resource

__all__ = ["ConfidentialDataHub"]

log = logging.getLogger(__name__)


class ConfidentialDataHub:
    """Resource and secret access for the containers of one pod VM."""

    def __init__(self, config: CdhConfig, kbs: ResourceFetcher, *, key_dir: Path) -> None:
        self.config = config
        self._kbs = kbs
        if config.skip_sealed_secret_verification:
            log.warning(
                "INSECURE: cdh.toml sets skip_sealed_secret_verification = true; sealed secrets "
                "will be unsealed WITHOUT checking their signature"
            )
        self.secrets = SealedSecretService(
            kbs,
            key_dir=key_dir,
            insecure_skip_verification=config.skip_sealed_secret_verification,
        )

    def start(self) -> list[Path]:
        """Fetch ``[[credentials]]`` into their files (upstream: at CDH start)."""
        written = []
        for cred in self.config.credentials:
            data = self._kbs.get_resource(cred.resource_uri.path, plugin=cred.resource_uri.plugin)
            path = Path(cred.path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except OSError as exc:
                raise DependencyError(
                    f"cannot write credential {cred.resource_uri} to {path}: {exc}",
                    reason="cdh.credential_write",
                ) from exc
            log.info("credential %s written to %s", cred.resource_uri, path)
            written.append(path)
        return written

    def get_resource(self, uri: str) -> bytes:
        parsed = parse_resource(uri)
        return self._kbs.get_resource(parsed.path, plugin=parsed.plugin)

    def unseal_secret(self, sealed: str) -> bytes:
        return self.secrets.unseal(sealed)

    def unseal_env(self, env: Mapping[str, str]) -> dict[str, str]:
        return self.secrets.unseal_env(env)

    def unseal_volume(self, directory: Path) -> list[Path]:
        return self.secrets.unseal_volume(directory)
