"""``[image]`` of cdh.toml (guest-and-control-plane.md §3.6, image-rs ``config.rs``) — pure.

Known upstream keys are parsed; the ones this puller does not implement
(``registry_configuration_uri``, ``registry_config``, ``image_pull_proxy``) are refused rather
than ignored, since ignoring a mirror or proxy setting would pull from somewhere else than the
pod author meant. One trustpod addition: ``insecure_http_registries`` (plain-http registries,
warned at start). Unknown keys are errors, as everywhere in cdh.toml.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trustpod.errors import ConfigError

__all__ = ["DEFAULT_WORK_DIR", "ImageSection", "parse_image_section"]

DEFAULT_WORK_DIR = "/run/kata-containers/image/"
_UNSUPPORTED = ("registry_configuration_uri", "registry_config", "image_pull_proxy")
_STR_KEYS = (
    "work_dir",
    "image_security_policy_uri",
    "image_security_policy",
    "sigstore_config_uri",
    "sigstore_config",
    "authenticated_registry_credentials_uri",
)


@dataclass(frozen=True, slots=True)
class ImageSection:
    work_dir: str = DEFAULT_WORK_DIR
    max_concurrent_layer_downloads_per_image: int = 3
    image_security_policy_uri: str | None = None
    image_security_policy: str | None = None
    sigstore_config_uri: str | None = None
    sigstore_config: str | None = None
    authenticated_registry_credentials_uri: str | None = None
    extra_root_certificates: tuple[str, ...] = ()
    insecure_http_registries: tuple[str, ...] = ()
    #: trustpod extension: PEM RSA keys (kbs:// or file://) for ``jwe`` recipient layers.
    jwe_private_key_uris: tuple[str, ...] = ()

    @property
    def has_policy(self) -> bool:
        return bool(self.image_security_policy_uri or self.image_security_policy)


def _uri(value: str | None, key: str, source: str) -> None:
    if value is not None and not value.startswith(("kbs://", "kbs+", "file://", "/")):
        raise ConfigError(
            f"image.{key} in {source} must be a kbs:// or file:// URI", reason="config.value"
        )


def parse_image_section(table: Mapping[str, Any], source: str = "cdh.toml") -> ImageSection:
    if not isinstance(table, Mapping):
        raise ConfigError(f"[image] in {source} must be a table", reason="config.type")
    for key in table:
        if key in _UNSUPPORTED:
            raise ConfigError(
                f"image.{key} in {source} is not supported by trustpod's image puller",
                reason="config.unsupported",
                fix="remove it; registries are reached directly",
            )
        known = (
            *_STR_KEYS,
            "max_concurrent_layer_downloads_per_image",
            "extra_root_certificates",
            "insecure_http_registries",
            "jwe_private_key_uris",
        )
        if key not in known:
            raise ConfigError(f"unknown key 'image.{key}' in {source}", reason="config.unknown_key")
    vals: dict[str, Any] = {}
    for key in _STR_KEYS:
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"image.{key} in {source} must be a string", reason="config.type")
        if value is not None:
            vals[key] = value
    for key in (
        "image_security_policy_uri",
        "sigstore_config_uri",
        "authenticated_registry_credentials_uri",
    ):
        _uri(vals.get(key), key, source)
    conc = table.get("max_concurrent_layer_downloads_per_image", 3)
    if not isinstance(conc, int) or isinstance(conc, bool) or not 1 <= conc <= 64:
        raise ConfigError(
            f"image.max_concurrent_layer_downloads_per_image in {source} must be 1..64",
            reason="config.value",
        )
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("extra_root_certificates", "insecure_http_registries", "jwe_private_key_uris"):
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(
                f"image.{key} in {source} must be a list of strings", reason="config.type"
            )
        lists[key] = tuple(value)
    return ImageSection(
        max_concurrent_layer_downloads_per_image=conc,
        extra_root_certificates=lists["extra_root_certificates"],
        insecure_http_registries=lists["insecure_http_registries"],
        jwe_private_key_uris=lists["jwe_private_key_uris"],
        **vals,
    )
