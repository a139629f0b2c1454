"""dm-verity hash trees byte-compatible with ``veritysetup format`` (pure core + streaming I/O)."""

from __future__ import annotations

from trustpod.verity.core import (
    ROOT_LEVEL,
    Superblock,
    TreeGeometry,
    VerityCorruption,
    VerityParams,
)

__all__ = ["ROOT_LEVEL", "Superblock", "TreeGeometry", "VerityCorruption", "VerityParams"]
