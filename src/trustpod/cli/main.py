"""``trustpod`` entry point: one parser, one sub-command group per module, one error handler.

Each group module exposes ``register(subparsers)`` which adds its parser and sets ``func`` (a
callable taking the parsed ``argparse.Namespace`` and returning an exit code). Group modules import
their heavy dependencies inside the handlers so ``trustpod --help`` stays fast.

Exit codes: 0 ok; 1 verification failed or policy denied; 2 usage or configuration error;
3 a dependency (network, storage, device) failed; 4 input could not be parsed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from trustpod import __version__
from trustpod.error_table import exit_code
from trustpod.errors import TrustpodError

__all__ = ["build_parser", "exit_code_for", "main", "run"]

#: Sub-command group modules, in help order.
GROUPS = (
    "kbs",
    "client",
    "admin",
    "verify",
    "collateral",
    "initdata",
    "secret",
    "guest",
    "agent",
    "verity",
    "image",
    "policy",
    "pod",
    "keyprovider",
)


def _requested_group(argv: Sequence[str]) -> str | None:
    """The group named on the command line (first non-option word), if it is one of ours."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in GROUPS else None


def build_parser(groups: Sequence[str] = GROUPS) -> argparse.ArgumentParser:
    """The parser with ``groups`` registered (``main`` registers only the group it runs: each
    group module costs 1-12 ms to import, which is most of a short command's CPU time)."""
    parser = argparse.ArgumentParser(
        prog="trustpod", description="Confidential Containers trust stack (KBS, verifiers, guest)."
    )
    parser.add_argument("--version", action="version", version=f"trustpod {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="group", metavar="COMMAND")
    sub.required = True
    for name in groups:
        mod_name = f"trustpod.cli.{name}"
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name != mod_name:
                raise
            continue
        module.register(sub)
    return parser


def exit_code_for(exc: TrustpodError) -> int:
    """The exit code of ``exc`` (the shared table, ``trustpod.error_table``)."""
    return exit_code(exc)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    group = _requested_group(words)
    parser = build_parser(GROUPS if group is None else (group,))
    args = parser.parse_args(words)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        rc: int = args.func(args)
        return rc
    except TrustpodError as exc:
        print(f"trustpod: error: {exc.diagnostics()}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return 130


def run() -> int:
    """The process entry (console script, ``python -m trustpod.cli``): ``main``, then
    ``gc.freeze()`` so the interpreter's final cyclic-GC pass skips every object still alive —
    ~40 ms of a short command's exit (ADR 1001). atexit handlers, weakref finalizers, module
    teardown and stream flushing still run; ``main`` itself (called in-process by tests) is
    unchanged."""
    import gc

    rc = main()
    gc.freeze()
    return rc
