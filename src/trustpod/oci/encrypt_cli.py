"""Host-side wiring for ``trustpod image encrypt`` / ``trustpod keyprovider`` / decrypting pulls.

``DirKekStore`` reads KEKs from files laid out like KBS resource paths
(``DIR/<repo>/<type>/<tag>``); it is the offline stand-in for the KBS on a build host. The
guest never uses it: there the KEK comes from the attested CDH.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from trustpod.errors import (
    ConfigError,
    NotFoundError,
)
from trustpod.oci.encrypt import Recipients, encrypt_image
from trustpod.oci.settings import OciSettings

__all__ = ["DirKekStore", "encrypt_from_args", "publish_kek"]

_MAX_KEY_FILE = 64 * 1024


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise NotFoundError(
            f"cannot read {what} ({path}: {exc.strerror})", reason="image.key_missing"
        ) from exc
    if len(data) > _MAX_KEY_FILE:
        raise ConfigError(f"{what} {path} is too large", reason="image.kek")
    return data


class DirKekStore:
    """``KekStore`` / ``KeySource``: key files under a directory mirroring KBS resource paths."""

    def __init__(self, key_dir: Path | None) -> None:
        self.key_dir = key_dir

    def kek_from_path(self, keypath: str) -> bytes:
        return _read(Path(keypath), f"key {keypath}")

    def kek(self, kid: str) -> bytes:
        if self.key_dir is None:
            raise ConfigError(f"no key directory to find the key {kid}", reason="image.key_dir")
        from trustpod.guest.uri import parse_resource

        parts = parse_resource(kid).path.split("/")
        if len(parts) != 3 or any(p in ("", ".", "..") for p in parts):
            raise ConfigError(f"bad key id {kid}", reason="image.kid")
        return _read(self.key_dir.joinpath(*parts), f"key {kid}")

    def get_resource(self, uri: str) -> bytes:
        return self.kek(uri)


def publish_kek(args: argparse.Namespace, kid: str, kek: bytes) -> None:
    """``POST /kbs/v0/resource/<path>`` (``application/octet-stream``, admin bearer token), as
    ``trustpod admin set-resource`` and coco_keyprovider's ``--kbs`` registration do."""
    from trustpod.admin_http import admin_request
    from trustpod.guest.uri import parse_resource

    if args.token_file is None:
        raise ConfigError("--publish needs --token-file (KBS admin token)", reason="image.publish")
    token = _read(args.token_file, "--token-file").decode().strip()
    admin_request(
        args.publish,
        "POST",
        f"/kbs/v0/resource/{parse_resource(kid).path}",
        token=token,
        cert_file=args.cert_file,
        reason_prefix="image.publish",
        content_type="application/octet-stream",
        content=kek,
    )


def _write_new_key(path: Path, kek: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(kek)


def encrypt_from_args(args: argparse.Namespace) -> dict[str, Any]:
    kid, kek = args.key_uri, None
    if kid is not None:
        from trustpod.oci.ocicrypt import normalize_kid

        kid = normalize_kid(kid)
        if args.key_file is not None:
            kek = _read(args.key_file, "--key-file")
            if len(kek) != 32:
                raise ConfigError(f"--key-file is {len(kek)} bytes, not 32", reason="image.kek")
        else:
            if args.key_out is None and args.publish is None:
                raise ConfigError(
                    "a new key would be lost: give --key-out FILE and/or --publish URL",
                    reason="image.kek",
                )
            kek = os.urandom(32)
            if args.key_out is not None:
                _write_new_key(args.key_out, kek)
        if args.publish:
            publish_kek(args, kid, kek)
    elif args.key_file or args.key_out or args.publish:
        raise ConfigError("--key-file/--key-out/--publish need --key-uri", reason="image.kek")
    jwe: list[rsa.RSAPublicKey] = []
    for pem in args.jwe_recipient:
        try:
            key = serialization.load_pem_public_key(_read(pem, "--jwe-recipient"))
        except ValueError as exc:
            raise ConfigError(f"{pem} is not a PEM public key", reason="image.jwe_key") from exc
        if not isinstance(key, rsa.RSAPublicKey):
            raise ConfigError(f"{pem} is not an RSA public key", reason="image.jwe_key")
        jwe.append(key)
    settings = OciSettings()
    if args.insecure_http_registry:
        settings = dataclasses.replace(
            settings, insecure_http_registries=frozenset(args.insecure_http_registry)
        )
    verify: Any = True
    if args.cert_file:
        import ssl

        verify = ssl.create_default_context(cafile=args.cert_file)
    result = encrypt_image(
        args.src,
        args.dst,
        Recipients(kid, kek, tuple(jwe)),
        layers=args.layers,
        settings=settings,
        verify=verify,
    )
    result["key_uri"] = kid
    result["published"] = bool(args.publish)
    return result
