"""``trustpod kbs``: run a KBS, or create a working KBS directory.

* ``trustpod kbs serve --config F [--workers N] [--log-format json]`` serves with TLS from the
  config.
* ``trustpod kbs config check FILE`` validates a config and lists every problem at once.
* ``trustpod kbs init --dir D --listen HOST:PORT [--insecure-http] [--force]
  [--san NAME]... [--storage-url URL] [--join DIR]`` writes
  ``D/kbs-config.toml``, TLS and signer keys, the admin key pair and ``D/admin-token``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("kbs", help="key broker service: serve, init")
    sub = parser.add_subparsers(dest="kbs_cmd", metavar="SUBCOMMAND")
    sub.required = True
    serve = sub.add_parser("serve", help="run the KBS")
    serve.add_argument("--config", "-c", required=True, metavar="FILE", help="kbs-config.toml")
    serve.add_argument("--workers", type=int, help="override http_server.worker_count")
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="override [trustpod] log_format (json: one object per line, with request ids)",
    )
    serve.set_defaults(func=_serve)
    init = sub.add_parser("init", help="write a working KBS directory (config, keys, token)")
    init.add_argument("--dir", required=True, metavar="D", help="directory to create/fill")
    init.add_argument("--listen", required=True, metavar="HOST:PORT", help="listen address")
    init.add_argument("--insecure-http", action="store_true", help="plain HTTP (testing only)")
    init.add_argument("--force", action="store_true", help="overwrite an existing config")
    init.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="NAME",
        help="extra DNS name or IP in the TLS certificate (repeatable), e.g. a Service name",
    )
    init.add_argument(
        "--storage-url",
        metavar="URL",
        help="postgres://USER[:PW]@HOST:PORT/DB or redis://HOST:PORT/N shared by replicas "
        "(the token signer key is then kept in the store)",
    )
    init.add_argument(
        "--join",
        type=Path,
        metavar="DIR",
        help="make a replica of the KBS in DIR (another replica's directory, copied here): "
        "reuse its admin key and at-rest key",
    )
    init.set_defaults(func=_init)
    config = sub.add_parser("config", help="kbs-config.toml tools")
    csub = config.add_subparsers(dest="kbs_config_cmd", metavar="SUBCOMMAND")
    csub.required = True
    check = csub.add_parser("check", help="report every problem of a kbs-config.toml at once")
    check.add_argument("file", metavar="FILE", help="kbs-config.toml")
    check.set_defaults(func=_config_check)


def _serve(args: argparse.Namespace) -> int:
    import logging

    from trustpod.kbs.serve import serve

    logging.getLogger("trustpod").setLevel(min(logging.getLogger().level, logging.INFO))
    serve(args.config, workers=args.workers, log_format=args.log_format)
    return 0


def _init(args: argparse.Namespace) -> int:
    from trustpod.kbs.init_dir import init_kbs_dir

    res = init_kbs_dir(
        args.dir,
        args.listen,
        insecure_http=args.insecure_http,
        force=args.force,
        sans=tuple(args.san),
        storage_url=args.storage_url,
        join=args.join,
    )
    print(f"wrote {res.config}")
    print(f"admin token: {res.admin_token}")
    if res.certificate is not None:
        print(f"TLS certificate (give it to clients with --cert-file): {res.certificate}")
    print(f"start it:  trustpod kbs serve --config {res.config}")
    cert = f" --cert-file {res.certificate}" if res.certificate else ""
    print(
        f"provision: trustpod admin --url {res.url} --token-file {res.admin_token}{cert} "
        "set-resource --path default/key/1 --resource-file SECRET"
    )
    return 0


def _config_check(args: argparse.Namespace) -> int:
    """Exit 0 and a one-line summary, or exit 2 listing every problem with its fix."""
    from trustpod.kbs.config import load_config

    cfg = load_config(args.file)
    mode = "HTTP (insecure)" if cfg.http_server.insecure_http else "HTTPS"
    print(
        f"{cfg.source}: OK ({mode} on {', '.join(cfg.http_server.sockets)}, storage "
        f"{cfg.storage_backend.storage_type}, admin "
        f"{cfg.admin.authorization_mode if cfg.admin else 'denied (no [admin])'})"
    )
    return 0
