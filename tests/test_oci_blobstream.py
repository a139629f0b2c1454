"""BlobStream: a layer read while it downloads is trusted only after finish() (ADR 1000)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from trustpod.errors import VerificationError
from trustpod.oci.blobstream import BlobStream
from trustpod.oci.manifest import Descriptor
from trustpod.oci.reference import parse_reference
from trustpod.oci.settings import OciSettings
from trustpod.oci.unpack import UnpackBudget, unpack_layer

IMAGE = parse_reference("127.0.0.1:5000/app/web:1")


def _desc(blob: bytes) -> Descriptor:
    return Descriptor(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "sha256:" + hashlib.sha256(blob).hexdigest(),
        len(blob),
    )


def _chunks(blob: bytes, size: int = 1000) -> list[bytes]:
    return [blob[i : i + size] for i in range(0, len(blob), size)]


def test_exact_bytes_pass_and_are_teed(tmp_path: Path) -> None:
    blob = os.urandom(10_000)
    fd = os.open(tmp_path / "tee", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        s = BlobStream(iter(_chunks(blob)), IMAGE, _desc(blob), fd)
        got = s.read(300) + s.read(5000)
        s.finish()
        s.finish()  # idempotent
    finally:
        os.close(fd)
    assert got == blob[:1000]  # at most n bytes per read, never past what was received
    assert (tmp_path / "tee").read_bytes() == blob


@pytest.mark.parametrize("change", ["flip", "short", "long"])
def test_other_bytes_fail_at_finish_or_at_once(change: str) -> None:
    blob = os.urandom(10_000)
    served = {
        "flip": blob[:50] + bytes([blob[50] ^ 1]) + blob[51:],
        "short": blob[:-1],
        "long": blob + b"x",
    }[change]
    s = BlobStream(iter(_chunks(served)), IMAGE, _desc(blob), -1)
    with pytest.raises(VerificationError) as info:
        while s.read(4096):
            pass
        s.finish()
    assert info.value.reason == "image.digest_mismatch"


def test_same_tar_other_compression_is_refused(tmp_path: Path) -> None:
    """The tar (diff_id) matches, the blob does not: unpacking succeeds, finish() refuses."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("f")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    raw = buf.getvalue()
    expected = gzip.compress(raw, mtime=0)
    served = gzip.compress(raw, mtime=1)  # same size, same tar, other header bytes
    assert len(served) == len(expected) and served != expected
    s = BlobStream(iter(_chunks(served)), IMAGE, _desc(expected), -1)
    root = tmp_path / "rootfs.partial"
    root.mkdir()
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    unpack_layer(s, "gzip", diff_id, root, UnpackBudget(OciSettings()))
    with pytest.raises(VerificationError):
        s.finish()
