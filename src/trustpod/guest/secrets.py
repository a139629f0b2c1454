"""Unsealing sealed secrets in the guest (guest-and-control-plane.md §3.3, §3.4).

``SealedSecretService.unseal(text)``:

1. parse the ``sealed.`` string (``trustpod.sealed``);
2. unless ``skip_sealed_secret_verification`` (insecure; warned every time), resolve ``kid`` — a
   ``kbs:///`` URI is fetched from the KBS, anything else is a file in the local key directory
   (strict name, must resolve inside the directory) — and verify the ES256 signature;
3. vault → GET the named KBS resource; envelope (provider ``kbs``, our extension) → GET the KEK
   from the KBS and decrypt.

``unseal_env`` / ``unseal_volume`` apply it the way the Kata agent does (env values starting with
``sealed.``; files in a secret volume → ``<name>.unsealed`` and the entry symlink re-pointed), but
a failure raises an error naming the secret instead of silently keeping the sealed value
(docs/compat.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from trustpod.errors import EvidenceError, NotFoundError, TrustpodError
from trustpod.sealed import (
    VaultSecret,
    classify_kid,
    is_sealed,
    kek_from_resource,
    load_public_key,
    open_envelope,
    parse,
    verify,
)
from trustpod.sealed.keys import MAX_KEY_BYTES
from trustpod.sealed.resource_uri import ResourceUri

__all__ = [
    "UNSEALED_SUFFIX",
    "ResourceFetcher",
    "SealedSecretService",
    "resolve_local_key",
]

log = logging.getLogger(__name__)

UNSEALED_SUFFIX = ".unsealed"
#: Kata skips these projected files when scanning secret volumes.
_SKIPPED_SUFFIXES = ("resolv.conf", "termination-log", "hostname", "hosts", "serviceaccount")
#: Largest file in a secret volume that is considered for unsealing.
MAX_SECRET_FILE_BYTES = 1024 * 1024


class ResourceFetcher(Protocol):
    """The KBS side the CDH needs (``KbsClient`` implements it)."""

    def get_resource(self, path: str, *, plugin: str = "resource") -> bytes: ...


def resolve_local_key(key_dir: Path, name: str) -> bytes:
    """Read the public key ``name`` (or ``name-public.json``) strictly inside ``key_dir``."""
    root = key_dir.resolve()
    for candidate in (name, f"{name}-public.json"):
        path = (root / candidate).resolve()
        # (1) path traversal refused even if a symlink points outside
        if path.parent != root:
            raise EvidenceError(
                f"sealed secret kid {name!r} resolves outside the key directory",
                reason="sealed.kid_traversal",
            )
        if path.is_file():
            if path.stat().st_size > MAX_KEY_BYTES:
                raise EvidenceError(f"key file {path} is too large", reason="sealed.key_invalid")
            return path.read_bytes()
    raise NotFoundError(
        f"no verification key for sealed secret kid {name!r} in {key_dir}",
        reason="sealed.kid_unknown",
        fix=f"put the signer's public JWK at {key_dir}/{name}, or use a kbs:/// kid",
    )


class SealedSecretService:
    """Verify and unseal ``sealed.`` strings against one KBS and one local key directory."""

    def __init__(
        self,
        kbs: ResourceFetcher,
        *,
        key_dir: Path,
        insecure_skip_verification: bool = False,
    ) -> None:
        self._kbs = kbs
        self._key_dir = key_dir
        self._skip = insecure_skip_verification

    def _fetch(self, uri: ResourceUri) -> bytes:
        return self._kbs.get_resource(uri.path, plugin=uri.plugin)

    def _public_key(self, kid: str) -> ec.EllipticCurvePublicKey:
        ref = classify_kid(kid)
        if ref.uri is not None:
            try:
                data = self._fetch(ref.uri)
            except NotFoundError as exc:
                raise NotFoundError(
                    f"sealed secret kid {kid!r} is unknown to the KBS: {exc.message}",
                    reason="sealed.kid_unknown",
                    fix="upload the signer's public JWK to the KBS under that path",
                ) from exc
        else:
            data = resolve_local_key(self._key_dir, ref.local_name or kid)
        return load_public_key(data)

    def unseal(self, text: str) -> bytes:
        # (1) parse; (2) verify unless explicitly skipped; (3) resolve through the KBS
        sealed = parse(text, allow_unsigned=self._skip)
        if self._skip:
            log.warning(
                "INSECURE: skip_sealed_secret_verification is on; the sealed secret's signature "
                "is NOT checked"
            )
        else:
            verify(sealed, self._public_key(sealed.kid or ""))
        payload = sealed.payload
        if isinstance(payload, VaultSecret):
            if payload.provider != "kbs":
                raise EvidenceError(
                    f"vault provider {payload.provider!r} is not supported (only 'kbs')",
                    reason="sealed.vault_provider",
                )
            return self._fetch(ResourceUri.parse(payload.name))
        kek = kek_from_resource(self._fetch(ResourceUri.parse(payload.key_id)))
        return open_envelope(payload, kek)

    def _named(self, exc: TrustpodError, what: str) -> TrustpodError:
        return type(exc)(f"cannot unseal {what}: {exc.message}", reason=exc.reason, fix=exc.fix)

    def unseal_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """A copy of ``env`` with every ``sealed.`` value replaced by its UTF-8 plaintext."""
        out = dict(env)
        for name, value in env.items():
            if not is_sealed(value):
                continue
            try:
                out[name] = self.unseal(value).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise EvidenceError(
                    f"cannot unseal env {name}: the plaintext is not UTF-8",
                    reason="sealed.not_utf8",
                ) from exc
            except TrustpodError as exc:
                raise self._named(exc, f"env {name}") from exc
        return out

    def unseal_volume(self, directory: Path) -> list[Path]:
        """Unseal each sealed file in a secret volume to ``<name>.unsealed`` (Kata PR #10674)."""
        written: list[Path] = []
        for entry in sorted(directory.iterdir()):
            name = entry.name
            if name.startswith(".") or name.endswith(UNSEALED_SUFFIX):
                continue
            if name.endswith(_SKIPPED_SUFFIXES) or not entry.is_file():
                continue
            if entry.stat().st_size > MAX_SECRET_FILE_BYTES:
                continue
            content = entry.read_bytes()
            if not content.startswith(b"sealed."):
                continue
            try:
                plaintext = self.unseal(content.decode("ascii", errors="replace").strip())
            except TrustpodError as exc:
                raise self._named(exc, f"volume file {entry}") from exc
            target = directory / f"{name}{UNSEALED_SUFFIX}"
            tmp = directory / f".{name}{UNSEALED_SUFFIX}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, entry.stat().st_mode & 0o777)
            with os.fdopen(fd, "wb") as fh:
                fh.write(plaintext)
            os.replace(tmp, target)
            if entry.is_symlink():
                link_tmp = directory / f".{name}.link.tmp"
                link_tmp.unlink(missing_ok=True)
                link_tmp.symlink_to(target.name)
                os.replace(link_tmp, entry)
            written.append(target)
        return written
