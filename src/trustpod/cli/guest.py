"""``trustpod guest run --config-dir D [--listen ADDR]``: AA + CDH + REST API in one process.

See ``trustpod.guest.run`` for the directory layout. Stops cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from trustpod.guest.run import GuestRuntime, settings_summary

    runtime = GuestRuntime.from_dir(args.config_dir)
    print(json.dumps(settings_summary(runtime.config)), flush=True)
    runtime.run(args.listen)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("guest", help="guest components (AA, CDH, local API)")
    sub = parser.add_subparsers(dest="guest_cmd", metavar="SUBCOMMAND")
    sub.required = True
    run = sub.add_parser("run", help="run AA + CDH + API until SIGTERM/SIGINT")
    run.add_argument(
        "--config-dir",
        type=Path,
        required=True,
        help="directory with initdata.toml / aa.toml / cdh.toml / guest.toml",
    )
    run.add_argument("--listen", help="HOST:PORT or unix:PATH (default from guest.toml)")
    run.set_defaults(func=_run)
