"""Shared fixtures: upstream vectors (read in place from TRUSTPOD_VECTORS, never copied)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "vectors"


def vectors_root() -> Path:
    return Path(os.environ.get("TRUSTPOD_VECTORS", str(_DEFAULT)))


@pytest.fixture(scope="session")
def trustee_vectors() -> Path:
    """Root of the upstream Trustee vectors (``.../vectors/trustee``); skips when absent."""
    root = vectors_root() / "trustee"
    if not root.is_dir():
        pytest.skip(f"Trustee vectors not found at {root} (set TRUSTPOD_VECTORS)")
    return root


@pytest.fixture(scope="session")
def verifier_data(trustee_vectors: Path) -> Path:
    """``deps/verifier/test_data`` inside the vectors."""
    return trustee_vectors / "deps" / "verifier" / "test_data"
