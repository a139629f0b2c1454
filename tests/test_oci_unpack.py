"""Layer application: whiteouts, opaque directories, compression, diff_ids and hostile tars."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.errors import EvidenceError, VerificationError
from trustpod.oci.settings import OciSettings
from trustpod.oci.unpack import UnpackBudget, unpack_layer

Entry = tuple[str, str, bytes | str]  # (name, kind, data or link target)


def _tar(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "file":
                assert isinstance(data, bytes)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
            elif kind == "fifo":
                info.type, info.mode = tarfile.FIFOTYPE, 0o600
            tar.addfile(info)
    return buf.getvalue()


def _apply(
    tmp: Path,
    root: Path,
    entries: list[Entry],
    compression: str = "",
    *,
    diff_id: str | None = None,
    settings: OciSettings | None = None,
) -> None:
    raw = _tar(entries)
    blob = {"gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress, "": bytes}[
        compression
    ](raw)
    path = tmp / f"blob-{hashlib.sha256(blob).hexdigest()[:12]}"
    path.write_bytes(blob)
    unpack_layer(
        path,
        compression,
        diff_id or "sha256:" + hashlib.sha256(raw).hexdigest(),
        root,
        UnpackBudget(settings or OciSettings()),
    )


def test_layers_whiteouts_and_opaque(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    _apply(
        tmp_path,
        root,
        [
            ("etc", "dir", b""),
            ("etc/a", "file", b"a"),
            ("etc/b", "file", b"b"),
            ("var/lib/x/old", "file", b"old"),
            ("bin/sh", "file", b"#!"),
            ("bin/link", "sym", "sh"),
            ("bin/hard", "hard", "bin/sh"),
            ("run/fifo", "fifo", b""),
        ],
        "gzip",
    )
    assert (root / "etc/a").read_bytes() == b"a"
    assert os.readlink(root / "bin/link") == "sh"
    assert os.stat(root / "bin/hard").st_ino == os.stat(root / "bin/sh").st_ino
    # second layer: delete etc/a, make var/lib/x opaque but add a new file there in the same layer
    # (listed *before* the opaque marker: it must survive), replace a file by a directory
    _apply(
        tmp_path,
        root,
        [
            ("etc/.wh.a", "file", b""),
            ("var/lib/x/new", "file", b"new"),
            ("var/lib/x/.wh..wh..opq", "file", b""),
            ("bin/sh", "dir", b""),
            ("bin/sh/inner", "file", b"i"),
        ],
        "zstd",
    )
    assert not (root / "etc/a").exists() and (root / "etc/b").exists()
    assert sorted(os.listdir(root / "var/lib/x")) == ["new"]
    assert (root / "bin/sh/inner").read_bytes() == b"i"
    assert not (root / "etc/.wh.a").exists()
    # whiteout of a whole directory
    _apply(tmp_path, root, [("var/.wh.lib", "file", b"")])
    assert not (root / "var/lib").exists()


@pytest.mark.parametrize(
    "entries",
    [
        [("../escape", "file", b"x")],
        [("a/../../escape", "file", b"x")],
        [("lnk", "sym", "/"), ("lnk/etc/passwd", "file", b"x")],
        [("lnk", "sym", "../.."), ("lnk/x", "file", b"x")],
        [("h", "hard", "../outside")],
        [("d", "dir", b""), ("h", "hard", "d")],
    ],
)
def test_hostile_entries_refused(tmp_path: Path, entries: list[Entry]) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    with pytest.raises(EvidenceError) as info:
        _apply(tmp_path, root, entries)
    assert info.value.reason in ("image.layer_unsafe", "image.layer_format")
    assert not (tmp_path / "escape").exists() and not Path("/etc/passwd").read_bytes().startswith(
        b"x"
    )


def test_diff_id_mismatch_and_limits(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    with pytest.raises(VerificationError) as info:
        _apply(tmp_path, root, [("f", "file", b"x")], diff_id="sha256:" + "0" * 64)
    assert info.value.reason == "image.diff_id_mismatch"
    small = OciSettings(max_unpacked_bytes=4096)
    with pytest.raises(EvidenceError) as e2:
        _apply(tmp_path, root, [("big", "file", b"\0" * 100_000)], "gzip", settings=small)
    assert e2.value.reason == "image.too_large"
    with pytest.raises(EvidenceError) as e3:
        _apply(
            tmp_path,
            root,
            [(f"f{i}", "file", b"") for i in range(5)],
            settings=OciSettings(max_tar_entries=3),
        )
    assert e3.value.reason == "image.too_large"
    corrupt = tmp_path / "corrupt"
    corrupt.write_bytes(gzip.compress(_tar([("f", "file", b"x")]))[:-12])
    with pytest.raises(EvidenceError) as e4:
        unpack_layer(corrupt, "gzip", "sha256:" + "0" * 64, root, UnpackBudget(OciSettings()))
    assert e4.value.reason == "image.layer_format"


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2048))
def test_random_blobs_fail_closed(raw: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "rootfs"
        root.mkdir()
        blob = Path(d) / "blob"
        blob.write_bytes(raw)
        for comp in ("", "gzip", "zstd"):
            try:
                unpack_layer(blob, comp, "sha256:" + "0" * 64, root, UnpackBudget(OciSettings()))
            except (EvidenceError, VerificationError):
                pass


_NAME = st.lists(
    st.sampled_from(["a", "b", "..", ".", ".wh.a", ".wh..wh..opq", "lnk", ""]),
    min_size=1,
    max_size=4,
).map("/".join)
_ENTRY = st.tuples(
    _NAME,
    st.sampled_from(["file", "dir", "sym", "hard"]),
    st.sampled_from([b"x", "/", "..", "../..", "a", "lnk/b"]),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(_ENTRY, min_size=1, max_size=8))
def test_random_trees_never_escape(entries: list[tuple[str, str, bytes | str]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        base = Path(d)
        root = base / "rootfs"
        root.mkdir()
        fixed: list[Entry] = [
            (n, k, (v if isinstance(v, bytes) else v.encode()) if k in ("file", "dir") else str(v))
            for n, k, v in entries
        ]
        try:
            _apply(base, root, fixed)
        except (EvidenceError, VerificationError):
            pass
        outside = {p.name for p in base.iterdir()}
        assert outside <= {"rootfs"} | {p.name for p in base.glob("blob-*")}, outside
        assert not Path("/a").exists() and not Path("/b").exists()  # via a symlink to /
