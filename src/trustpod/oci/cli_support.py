"""``trustpod image pull`` on a host: the guest's puller with files instead of the KBS (I/O).

Same code path as the guest (``ImagePuller``); keys are files, the lookaside store comes from
``--signature-store`` (every image) or ``--registries-d`` (``*.yaml`` as skopeo's
``--registries.d``), credentials from ``--authfile``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from trustpod.errors import ConfigError
from trustpod.oci.auth import Credentials, parse_auth_json
from trustpod.oci.policy import parse_policy
from trustpod.oci.puller import FileKeyLoader, ImagePuller
from trustpod.oci.registry import RegistryClient
from trustpod.oci.settings import OciSettings, Platform
from trustpod.oci.sigstore_config import SigstoreConfig, parse_sigstore_configs

__all__ = ["parse_platform", "pull_from_args"]


def parse_platform(text: str) -> Platform:
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(f"--platform {text!r} must be os/arch[/variant]", reason="image.platform")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}", reason="image.input") from exc
    if len(data) > limit:
        raise ConfigError(f"{what} {path} is larger than {limit} bytes", reason="image.input")
    return data


def _lookaside(args: argparse.Namespace) -> SigstoreConfig | None:
    if args.signature_store:
        url = str(args.signature_store)
        if not url.startswith(("file://", "http://", "https://")):
            raise ConfigError(
                "--signature-store must be a file:// or http(s) URL", reason="image.input"
            )
        return SigstoreConfig(url.rstrip("/"), {})
    if args.registries_d:
        docs = [(str(p), p.read_text()) for p in sorted(args.registries_d.glob("*.yaml"))]
        return parse_sigstore_configs(docs)
    return None


def pull_from_args(args: argparse.Namespace) -> dict[str, Any]:
    settings = OciSettings()
    if args.platform:
        settings = dataclasses.replace(settings, platform=parse_platform(args.platform))
    if args.insecure_http_registry:
        settings = dataclasses.replace(
            settings, insecure_http_registries=frozenset(args.insecure_http_registry)
        )
    policy = parse_policy(
        _read(args.policy, settings.max_policy_bytes, "policy"),
        str(args.policy),
        max_bytes=settings.max_policy_bytes,
    )
    creds = Credentials({})
    if args.authfile:
        creds = parse_auth_json(_read(args.authfile, 1024 * 1024, "authfile"), str(args.authfile))
    layer_keys = None
    if getattr(args, "decryption_key_dir", None) or getattr(args, "jwe_private_key", None):
        from trustpod.oci.decrypt import LayerKeys, load_rsa_private_key
        from trustpod.oci.encrypt_cli import DirKekStore

        layer_keys = LayerKeys(
            kbs=DirKekStore(args.decryption_key_dir),
            jwe_keys=[
                load_rsa_private_key(_read(p, 64 * 1024, "JWE key"), str(p))
                for p in args.jwe_private_key
            ],
        )
    puller = ImagePuller(
        RegistryClient(settings, creds),
        args.cache_dir or args.dest / ".blobs",
        policy=policy,
        keys=FileKeyLoader(settings.max_key_bytes),
        pgp=None,
        lookaside=_lookaside(args),
        layer_keys=layer_keys,
    )
    try:
        pulled = puller.pull(args.ref, args.dest)
    finally:
        puller.close()
    return {
        "reference": pulled.reference,
        "manifest_digest": pulled.manifest_digest,
        "index_digest": pulled.index_digest,
        "policy_scope": pulled.decision.scope if pulled.decision else None,
        "requirements": list(pulled.decision.requirements) if pulled.decision else [],
        "rootfs": str(pulled.rootfs),
    }
