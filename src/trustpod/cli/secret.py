"""``trustpod secret``: signing keys, sealing, and unsealing through the guest CDH (§3.3, §3.4).

* ``keygen --kid NAME --out DIR`` writes ``NAME-private.json`` (0600) and ``NAME-public.json``
  (P-256 JWKs, like upstream's ``secret keygen``); upload the public one to the KBS (kid
  ``kbs:///…``) or install it as ``<key_dir>/NAME`` in the guest.
* ``seal --signing-kid K --signing-jwk-path F [--k8s-secret NAME --key KEY] vault
  --resource-uri kbs:///r/t/g`` or ``… envelope --key-uri kbs:///r/t/g --plaintext-file F
  --kek-file KEK`` prints the ``sealed.`` string (or a Kubernetes Secret manifest). For envelope
  secrets the administrator generates the 32-byte key-encryption key, seals with it, and uploads
  the same file to the KBS at ``--key-uri`` (``trustpod admin … set-resource``).
* ``unseal [SEALED | --file F] [--api URL | --unix PATH]``: asks the guest's CDH API.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path
from typing import Any

from trustpod.errors import ConfigError, DependencyError

__all__ = ["k8s_secret_manifest", "register"]

_K8S_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-."


def k8s_secret_manifest(name: str, key: str, sealed: str, namespace: str | None = None) -> str:
    """An ``Opaque`` Secret whose ``data[key]`` is base64 of the sealed string."""
    if not name or any(c not in _K8S_NAME_CHARS for c in name):
        raise ConfigError(f"--k8s-secret {name!r} is not a valid Kubernetes name")
    if not key or any(not (c.isalnum() or c in "-._") for c in key):
        raise ConfigError(f"--key {key!r} is not a valid Secret key")
    meta = f"  name: {name}\n" + (f"  namespace: {namespace}\n" if namespace else "")
    value = base64.b64encode(sealed.encode("ascii")).decode("ascii")
    return f"apiVersion: v1\nkind: Secret\nmetadata:\n{meta}type: Opaque\ndata:\n  {key}: {value}\n"


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}", reason="cli.read") from exc


def _keygen(args: argparse.Namespace) -> int:
    import json

    from trustpod.sealed import classify_kid, generate_signing_key, private_jwk, public_jwk

    ref = classify_kid(args.kid)
    stem = ref.local_name or (ref.uri.segments[-1] if ref.uri else "signing-key")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    key = generate_signing_key()
    priv, pub = out / f"{stem}-private.json", out / f"{stem}-public.json"
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(private_jwk(key, args.kid), fh)
    pub.write_text(json.dumps(public_jwk(key.public_key(), args.kid)))
    print(f"private: {priv}\npublic:  {pub}")
    return 0


def _seal(args: argparse.Namespace) -> int:
    from trustpod.sealed import (
        ResourceUri,
        VaultSecret,
        classify_kid,
        load_private_jwk,
        seal,
        seal_envelope,
    )

    classify_kid(args.signing_kid)
    key = load_private_jwk(_read(args.signing_jwk_path, "signing JWK"))
    annotations = dict(a.split("=", 1) for a in args.annotation or [])
    if args.kind == "vault":
        ResourceUri.parse(args.resource_uri)
        payload: Any = VaultSecret(
            name=args.resource_uri, provider=args.provider, annotations=annotations
        )
    else:
        plaintext = _read(args.plaintext_file, "plaintext")
        kek = _read(args.kek_file, "key-encryption key")
        payload = seal_envelope(plaintext, kek, args.key_uri, annotations=annotations)
    sealed = seal(payload, key, args.signing_kid)
    if args.k8s_secret:
        if not args.key:
            raise ConfigError("--k8s-secret needs --key", reason="cli.usage")
        sys.stdout.write(k8s_secret_manifest(args.k8s_secret, args.key, sealed, args.namespace))
    else:
        print(sealed)
    return 0


def _unseal(args: argparse.Namespace) -> int:
    import httpx

    text = args.sealed if args.sealed else _read(args.file, "sealed secret").decode("ascii")
    transport = httpx.HTTPTransport(uds=args.unix) if args.unix else None
    base = "http://localhost" if args.unix else args.api.rstrip("/")
    try:
        with httpx.Client(transport=transport, timeout=args.timeout) as client:
            response = client.post(f"{base}/cdh/unseal", content=text.strip().encode("ascii"))
    except httpx.TransportError as exc:
        raise DependencyError(
            f"guest API unreachable: {exc}",
            reason="cli.guest_api",
            fix="is `trustpod guest run` running in this VM?",
        ) from exc
    if response.status_code != 200:
        from trustpod.errors import EvidenceError, NotFoundError, VerificationError

        reason = response.headers.get("X-Trustpod-Reason", "cdh.unseal")
        cls = {404: NotFoundError, 403: VerificationError, 400: EvidenceError}.get(
            response.status_code, DependencyError
        )
        raise cls(f"unseal failed: {response.text}", reason=reason)
    sys.stdout.buffer.write(response.content)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("secret", help="sealed secrets: keygen, seal, unseal")
    sub = parser.add_subparsers(dest="secret_cmd", metavar="SUBCOMMAND")
    sub.required = True

    kg = sub.add_parser("keygen", help="new P-256 signing key pair (JWK files)")
    kg.add_argument("--kid", required=True, help="key id: a name or kbs:///repo/type/tag")
    kg.add_argument("--out", "--output-dir", dest="out", type=Path, required=True)
    kg.set_defaults(func=_keygen)

    s = sub.add_parser("seal", help="print a signed sealed secret")
    s.add_argument("--signing-kid", required=True, help="kid put in the header")
    s.add_argument("--signing-jwk-path", type=Path, required=True, help="private JWK file")
    s.add_argument("--k8s-secret", metavar="NAME", help="print a Kubernetes Secret manifest")
    s.add_argument("--key", help="key inside the Kubernetes Secret")
    s.add_argument("--namespace", help="namespace of the Kubernetes Secret")
    kinds = s.add_subparsers(dest="kind", metavar="TYPE")
    kinds.required = True
    v = kinds.add_parser("vault", help="pointer to a KBS resource")
    v.add_argument("--resource-uri", required=True, help="kbs:///repo/type/tag")
    v.add_argument("--provider", default="kbs", choices=("kbs",))
    v.add_argument("--annotation", action="append", metavar="K=V")
    e = kinds.add_parser("envelope", help="data encrypted under a key held in the KBS")
    e.add_argument("--key-uri", required=True, help="kbs:///repo/type/tag of the KEK")
    e.add_argument("--plaintext-file", type=Path, required=True)
    e.add_argument(
        "--kek-file",
        type=Path,
        required=True,
        help="the 32-byte KEK (raw or base64) also uploaded to the KBS at --key-uri",
    )
    e.add_argument("--annotation", action="append", metavar="K=V")
    s.set_defaults(func=_seal)

    u = sub.add_parser("unseal", help="unseal through the guest CDH API (inside the pod VM)")
    u.add_argument("sealed", nargs="?", help="the sealed. string (or use --file)")
    u.add_argument("--file", type=Path, help="file holding the sealed string")
    u.add_argument("--api", default="http://127.0.0.1:8006", help="guest API base URL")
    u.add_argument("--unix", metavar="PATH", help="guest API unix socket instead of --api")
    u.add_argument("--timeout", type=float, default=60.0)
    u.set_defaults(func=_unseal)
