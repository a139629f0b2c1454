"""Where simple-signing signatures live: the registries.d-style "sigstore config" (pure, §2.2).

``{"default-docker": {"sigstore": URL}, "docker": {"<scope>": {"sigstore": URL}}}``; several
documents merge (identical duplicates are fine, conflicting ones an error, as image-rs). Lookup is
the image's policy scopes in order, then ``default-docker``. ``lookaside`` (containers/image's
newer name) is accepted as well as ``sigstore``; ``*-staging`` keys are ignored.
Signature URL: ``<base>/<repository path>@<algo>=<hex>/signature-<n>`` (n from 1).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from trustpod.errors import ConfigError
from trustpod.oci.reference import ImageReference

__all__ = ["SigstoreConfig", "parse_sigstore_configs", "signature_url"]

_IGNORED = {"sigstore-staging", "lookaside-staging", "use-sigstore-attachments"}


@dataclass(frozen=True, slots=True)
class SigstoreConfig:
    default: str | None
    docker: dict[str, str]

    def base_for(self, image: ImageReference) -> str | None:
        for scope in image.policy_scopes():
            if scope in self.docker:
                return self.docker[scope]
        return self.default


def _url(entry: Any, where: str, source: str) -> str | None:
    if not isinstance(entry, dict):
        raise ConfigError(f"{source}: {where} must be a mapping", reason="image.sigstore_config")
    extra = set(entry) - {"sigstore", "lookaside"} - _IGNORED
    if extra:
        raise ConfigError(
            f"{source}: unknown key {sorted(extra)[0]!r} in {where}", reason="image.sigstore_config"
        )
    url = entry.get("sigstore", entry.get("lookaside"))
    if url is None:
        return None
    if not isinstance(url, str) or not url.startswith(("file://", "http://", "https://")):
        raise ConfigError(
            f"{source}: {where}.sigstore must be a file:// or http(s) URL",
            reason="image.sigstore_config",
        )
    return url.rstrip("/")


def parse_sigstore_configs(documents: Iterable[tuple[str, str]]) -> SigstoreConfig:
    """Merge ``(source, yaml text)`` documents into one ``SigstoreConfig``."""
    import yaml  # only pods with a lookaside config pay for it

    default: str | None = None
    docker: dict[str, str] = {}
    for source, text in documents:
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"{source} is not YAML: {exc}", reason="image.sigstore_config"
            ) from exc
        if not isinstance(doc, dict) or set(doc) - {"default-docker", "docker"}:
            raise ConfigError(
                f"{source}: top level must be default-docker/docker", reason="image.sigstore_config"
            )
        if doc.get("default-docker") is not None:
            url = _url(doc["default-docker"], "default-docker", source)
            if default is not None and url != default:
                raise ConfigError(
                    f"{source}: conflicting default-docker", reason="image.sigstore_config"
                )
            default = url
        scopes = doc.get("docker") or {}
        if not isinstance(scopes, dict):
            raise ConfigError(f"{source}: docker must be a mapping", reason="image.sigstore_config")
        for scope, entry in scopes.items():
            url = _url(entry, f"docker[{scope!r}]", source)
            if url is None:
                continue
            if scope in docker and docker[scope] != url:
                raise ConfigError(
                    f"{source}: conflicting entry for {scope!r}", reason="image.sigstore_config"
                )
            docker[str(scope)] = url
    return SigstoreConfig(default, docker)


def signature_url(base: str, image: ImageReference, digest: str, index: int) -> str:
    algo, hexpart = digest.split(":", 1)
    return f"{base}/{image.repository}@{algo}={hexpart}/signature-{index}"
