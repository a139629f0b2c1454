"""``trustpod client``: attest to a KBS and fetch resources, like upstream's ``kbs-client``.

* ``trustpod client --url U [--cert-file PEM] [--tee sample] [--tee-key-file PEM]
  [--init-data FILE] attest`` prints the attestation token.
* ``trustpod client --url U get-resource --path repo/type/tag [--attestation-token FILE]
  [--tee-key-file PEM]`` prints the resource as standard base64 (upstream ``kbs-client`` output);
  ``--output FILE`` writes the raw bytes to a new 0600 file instead (``-``: raw to stdout).

With ``--attestation-token`` no attestation happens (passport mode): the token must have been
issued for the key in ``--tee-key-file`` (``attest --tee-key-file`` writes a new key there when
the file does not exist yet).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib
import sys
from pathlib import Path
from typing import Any

from trustpod.errors import ConfigError

__all__ = ["make_attester", "register"]

_DETECT_MODULE = "trustpod.guest.attesters.detect"


def _add_key_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    parser.add_argument(
        "--tee-key-file",
        type=Path,
        default=default,
        metavar="PEM",
        help="TEE private key (PEM); attest creates it when missing (default: ephemeral P-256)",
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("client", help="KBS client: attest, get resources")
    parser.add_argument("--url", required=True, help="KBS base URL, e.g. https://kbs:8080")
    parser.add_argument("--cert-file", metavar="PEM", help="extra CA certificate for HTTPS")
    parser.add_argument(
        "--tee",
        default="sample",
        help="attester: sample (default), auto, snp, tdx, tpm, az-snp-vtpm, az-tdx-vtpm, "
        "emulated-az-snp-vtpm",
    )
    parser.add_argument(
        "--attester-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="attester setting (repeatable), e.g. tcti=swtpm:host=127.0.0.1,port=2321",
    )
    _add_key_options(parser, default=None)
    parser.add_argument("--init-data", type=Path, metavar="FILE", help="initdata TOML to send")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request seconds")
    parser.add_argument("--max-retries", type=int, default=5, help="handshake attempts")
    sub = parser.add_subparsers(dest="client_cmd", metavar="SUBCOMMAND")
    sub.required = True

    attest = sub.add_parser("attest", help="run RCAR and print the attestation token")
    _add_key_options(attest, default=argparse.SUPPRESS)
    attest.set_defaults(func=_attest)

    get = sub.add_parser("get-resource", help="fetch and decrypt a resource, print base64")
    get.add_argument("--path", required=True, help="resource path repo/type/tag")
    get.add_argument("--attestation-token", type=Path, metavar="FILE", help="use this token")
    get.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write the raw bytes to FILE (created 0600; '-' = raw bytes on stdout) instead of "
        "printing base64",
    )
    get.add_argument("--plugin", default="resource", help=argparse.SUPPRESS)
    _add_key_options(get, default=argparse.SUPPRESS)
    get.set_defaults(func=_get_resource)


def make_attester(name: str, settings: Any = None) -> Any:
    """The attester named ``name``: via ``trustpod.guest.attesters.detect`` when present."""
    try:
        detect = importlib.import_module(_DETECT_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != _DETECT_MODULE:
            raise
        detect = None
    factory = getattr(detect, "make_attester", None)
    if factory is not None:
        return factory(name, settings if settings is not None else {})
    if name == "sample":
        from trustpod.guest.attesters.sample import SampleAttester

        return SampleAttester()
    raise ConfigError(f"unknown attester {name!r}", reason="guest.attester", fix="use --tee sample")


def _attester(args: argparse.Namespace) -> Any:
    settings: dict[str, str] = {}
    for item in args.attester_setting:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"--attester-setting {item!r} is not KEY=VALUE", reason="guest.attester"
            )
        settings[key.strip()] = value
    return make_attester(args.tee, settings)


def _tee_key(path: Path | None, *, create: bool) -> Any:
    from trustpod.guest.tee_key import TeeKeyPair

    if path is None:
        return None
    if not path.exists() and create:
        pair = TeeKeyPair.generate_ec()
        pair.save(path)
        return pair
    return TeeKeyPair.load(path)


def _client(args: argparse.Namespace, *, attester: Any, key: Any, token: str | None) -> Any:
    from trustpod.guest.kbs_client import KbsClient

    init_data = None
    if args.init_data is not None:
        try:
            init_data = args.init_data.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read initdata file {args.init_data}: {exc}") from exc
    return KbsClient(
        args.url,
        attester,
        tee_key=key,
        cert_file=args.cert_file,
        init_data_toml=init_data,
        token=token,
        timeout=args.timeout,
        max_retries=args.max_retries,
    )


def _attest(args: argparse.Namespace) -> int:
    key = _tee_key(args.tee_key_file, create=True)
    with _client(args, attester=_attester(args), key=key, token=None) as client:
        print(client.attest())
    return 0


def _get_resource(args: argparse.Namespace) -> int:
    token = None
    if args.attestation_token is not None:
        if args.tee_key_file is None:
            raise ConfigError(
                "--attestation-token needs the matching --tee-key-file",
                reason="guest.tee_key",
                fix="pass the key file used with `trustpod client attest --tee-key-file`",
            )
        try:
            token = args.attestation_token.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read token file {args.attestation_token}: {exc}") from exc
    key = _tee_key(args.tee_key_file, create=False)
    attester = None if token is not None else _attester(args)
    with _client(args, attester=attester, key=key, token=token) as client:
        data = client.get_resource(args.path, plugin=args.plugin)
    if args.output is None:
        print(base64.b64encode(data).decode("ascii"))
    elif args.output == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        _write_private(Path(args.output), data)
    return 0


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically: a new 0600 file in the target's directory, renamed over it."""
    import os
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")  # 0600
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path}: {exc.strerror}", reason="cli.output", fix="pass a writable path"
        ) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
