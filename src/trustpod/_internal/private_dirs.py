"""Directories created private (0700) under a umask, never wider, not even briefly."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["make_private_dirs"]


def make_private_dirs(*paths: Path, parents: bool = False, exist_ok: bool = False) -> None:
    """``mkdir(mode=0o700)`` each of ``paths`` in order, under ``umask(0o077)`` so that neither
    a path nor a parent it creates is ever wider than its owner's."""
    old = os.umask(0o077)
    try:
        for path in paths:
            path.mkdir(mode=0o700, parents=parents, exist_ok=exist_ok)
    finally:
        os.umask(old)
