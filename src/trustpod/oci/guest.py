"""Wiring the image puller into the guest: policy, keys and credentials through the attested CDH.

``GuestImagePuller(cdh)`` implements the agent's ``ImagePuller`` port
(``trustpod.agent.images``). On the first pull it reads ``[image]`` of the pod's cdh.toml
(§2.4 of pods-images-gpu.md):

* ``image_security_policy_uri`` (wins) or inline ``image_security_policy``; none = accept all;
* ``sigstore_config_uri`` (wins) or inline ``sigstore_config`` (lookaside stores);
* ``authenticated_registry_credentials_uri`` (auth.json; env
  ``CDH_DEFAULT_IMAGE_AUTHENTICATED_REGISTRY_CREDENTIALS`` overrides, as upstream);
* policy ``keyPath``: ``kbs:///…`` / ``kbs+plugin://…`` through the CDH (attested; cached for
  the life of the puller, i.e. of the pod, like image-rs), ``file://`` or a path inside the VM;
* encrypted layers: each annotation packet's ``kid`` (the KEK) through the CDH, and the
  ``jwe_private_key_uris`` (trustpod extension) for ``jwe`` recipients (``trustpod.oci.decrypt``).

The blob cache is ``<work_dir>/layers``. Everything is fetched per pod, after attestation.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path
from typing import Protocol

from trustpod.errors import ConfigError
from trustpod.oci.auth import Credentials, parse_auth_json
from trustpod.oci.config import ImageSection, parse_image_section
from trustpod.oci.decrypt import LayerKeys
from trustpod.oci.policy import parse_policy
from trustpod.oci.puller import FileKeyLoader, ImagePuller, PulledImage
from trustpod.oci.registry import RegistryClient
from trustpod.oci.settings import OciSettings
from trustpod.oci.sigstore_config import parse_sigstore_configs

__all__ = ["CREDENTIALS_ENV", "CdhKeyLoader", "GuestImagePuller", "ResourceSource"]

log = logging.getLogger(__name__)

CREDENTIALS_ENV = "CDH_DEFAULT_IMAGE_AUTHENTICATED_REGISTRY_CREDENTIALS"


class ResourceSource(Protocol):
    """What the puller needs of the CDH (``ConfidentialDataHub`` implements it)."""

    def get_resource(self, uri: str) -> bytes: ...


class CdhKeyLoader:
    """``KeyLoader``: ``kbs://`` through the CDH (cached), anything else from the VM's files."""

    def __init__(self, cdh: ResourceSource, max_bytes: int) -> None:
        self._cdh, self._files = cdh, FileKeyLoader(max_bytes)
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def load_key(self, key_path: str) -> bytes:
        if not key_path.startswith(("kbs://", "kbs+")):
            return self._files.load_key(key_path)
        with self._lock:
            if key_path not in self._cache:
                self._cache[key_path] = self._cdh.get_resource(key_path)
            return self._cache[key_path]


class GuestImagePuller:
    """The agent's ``ImagePuller``: one pod's policy, credentials and cache."""

    def __init__(
        self,
        cdh: ResourceSource,
        section: ImageSection,
        *,
        settings: OciSettings | None = None,
    ) -> None:
        self._cdh, self.section = cdh, section
        base = settings or OciSettings()
        self._settings = dataclasses.replace(
            base,
            insecure_http_registries=base.insecure_http_registries
            | frozenset(section.insecure_http_registries),
            extra_root_certificates=base.extra_root_certificates + section.extra_root_certificates,
            max_concurrent_layer_downloads=section.max_concurrent_layer_downloads_per_image,
        )
        self._puller: ImagePuller | None = None
        self._lock = threading.Lock()
        self._pull_lock = threading.Lock()

    @classmethod
    def from_cdh(
        cls, cdh: ResourceSource, image_table: object, source: str = "cdh.toml"
    ) -> GuestImagePuller:
        if not isinstance(image_table, dict):
            raise ConfigError(f"[image] in {source} must be a table", reason="config.type")
        return cls(cdh, parse_image_section(image_table, source))

    def _text(self, uri: str | None, inline: str | None) -> bytes | None:
        if uri:
            if uri.startswith(("kbs://", "kbs+")):
                return self._cdh.get_resource(uri)
            return FileKeyLoader(self._settings.max_policy_bytes).load_key(uri)
        return inline.encode() if inline is not None else None

    def _build(self) -> ImagePuller:
        s = self.section
        policy_raw = self._text(s.image_security_policy_uri, s.image_security_policy)
        policy = None
        if policy_raw is not None:
            policy = parse_policy(
                policy_raw,
                s.image_security_policy_uri or "image_security_policy",
                max_bytes=self._settings.max_policy_bytes,
            )
        sig_raw = self._text(s.sigstore_config_uri, s.sigstore_config)
        lookaside = None
        if sig_raw is not None:
            lookaside = parse_sigstore_configs(
                [(s.sigstore_config_uri or "sigstore_config", sig_raw.decode())]
            )
        cred_uri = os.environ.get(CREDENTIALS_ENV) or s.authenticated_registry_credentials_uri
        creds = Credentials({})
        if cred_uri:
            raw = self._text(cred_uri, None)
            assert raw is not None
            creds = parse_auth_json(raw, cred_uri)
        registry = RegistryClient(self._settings, creds)
        keys = CdhKeyLoader(self._cdh, self._settings.max_key_bytes)
        return ImagePuller(
            registry,
            Path(s.work_dir) / "layers",
            policy=policy,
            keys=keys,
            pgp=None,  # gpgv is looked up on the first signedBy requirement
            lookaside=lookaside,
            layer_keys=LayerKeys(
                kbs=self._cdh, jwe_key_uris=s.jwe_private_key_uris, load=keys.load_key
            ),
        )

    def puller(self) -> ImagePuller:
        with self._lock:
            if self._puller is None:
                self._puller = self._build()
            return self._puller

    def pull_image(self, image_ref: str, dest: Path) -> PulledImage:
        """Pull with the full result (digests, config, decision); pulls are serialized."""
        puller = self.puller()
        with self._pull_lock:
            return puller.pull(image_ref, dest)

    def pull(self, image_ref: str, dest: Path) -> Path:
        """``trustpod.agent.images.ImagePuller``: the rootfs is ``dest/rootfs``."""
        return self.pull_image(image_ref, dest).rootfs

    def close(self) -> None:
        if self._puller is not None:
            self._puller.close()
