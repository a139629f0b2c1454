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


class _Chunked:
    """A reader returning at most the next of ``sizes`` bytes per call, as a network stream does."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data, self._sizes, self._pos, self._i = data, sizes, 0, 0

    def read(self, n: int = -1, /) -> bytes:
        size = self._sizes[self._i % len(self._sizes)]
        self._i += 1
        out = self._data[self._pos : self._pos + min(size, n if n >= 0 else size)]
        self._pos += len(out)
        return out


_SIZES = [0, 1, 511, 512, 513, 4096, 100_000]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from(_SIZES), min_size=1, max_size=5),
    st.lists(st.integers(1, 70_000), min_size=1, max_size=6),
    st.sampled_from(["", "gzip", "zstd"]),
)
def test_stream_in_any_chunks_gives_the_same_tree(
    files: list[int], chunks: list[int], compression: str
) -> None:
    import tempfile

    entries: list[Entry] = [(f"d/f{i}", "file", os.urandom(n)) for i, n in enumerate(files)]
    raw = _tar(entries)
    blob = {"gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress, "": bytes}[
        compression
    ](raw)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        unpack_layer(
            _Chunked(blob, chunks),
            compression,
            "sha256:" + hashlib.sha256(raw).hexdigest(),
            root,
            UnpackBudget(OciSettings()),
        )
        for name, _, data in entries:
            assert (root / name).read_bytes() == data


def test_large_file_zlib_fallback_and_truncation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zlib

    from trustpod.oci import layerstream

    big = os.urandom(3 << 20) + b"text " * (2 << 20)  # > one 4 MiB decompressed chunk
    for inflate in (layerstream._inflate, zlib):
        monkeypatch.setattr(layerstream, "_inflate", inflate)
        root = tmp_path / f"rootfs-{inflate.__name__}"
        root.mkdir()
        _apply(tmp_path, root, [("big", "file", big), ("after", "file", b"x")], "gzip")
        assert (root / "big").read_bytes() == big and (root / "after").read_bytes() == b"x"
    # a tar whose last member's data is cut short is a format error, not a short file
    raw = _tar([("f", "file", b"y" * 5000)])[:3000]
    cut = tmp_path / "cut"
    cut.write_bytes(raw)
    root = tmp_path / "rootfs-cut"
    root.mkdir()
    with pytest.raises(EvidenceError) as info:
        unpack_layer(cut, "", "sha256:" + "0" * 64, root, UnpackBudget(OciSettings()))
    assert info.value.reason == "image.layer_format"


def test_gnu_sparse_file(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("tar") is None:
        pytest.skip("GNU tar not installed (apt: tar)")
    src = tmp_path / "src"
    src.mkdir()
    with (src / "sparse").open("wb") as f:
        f.write(b"head")
        f.seek(1 << 20)
        f.write(b"tail")
    layer = tmp_path / "layer.tar"
    subprocess.run(
        ["tar", "--sparse", "--format=gnu", "-C", str(src), "-cf", str(layer), "sparse"],
        check=True,
    )
    raw = layer.read_bytes()
    root = tmp_path / "rootfs"
    root.mkdir()
    unpack_layer(
        layer, "", "sha256:" + hashlib.sha256(raw).hexdigest(), root, UnpackBudget(OciSettings())
    )
    assert (root / "sparse").read_bytes() == (src / "sparse").read_bytes()


def test_huge_pax_header_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"comment": "x" * (2 << 20)}
        tar.addfile(info, io.BytesIO(b""))
    raw = buf.getvalue()
    blob = tmp_path / "pax"
    blob.write_bytes(raw)
    root = tmp_path / "rootfs"
    root.mkdir()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    with pytest.raises(EvidenceError) as info:
        unpack_layer(blob, "", digest, root, UnpackBudget(OciSettings()))
    assert info.value.reason == "image.too_large"
    unpack_layer(blob, "", digest, root, UnpackBudget(OciSettings(max_tar_header_bytes=4 << 20)))
    assert (root / "f").read_bytes() == b""


def test_corrupt_zstd_is_a_layer_format_error(tmp_path: Path) -> None:
    """zstandard is imported for zstd layers only; its errors still fail closed as format."""
    root = tmp_path / "rootfs"
    root.mkdir()
    raw = _tar([("a", "file", b"x" * 5000)])
    blob = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(raw))
    blob[len(blob) // 2] ^= 0xFF
    (tmp_path / "blob").write_bytes(bytes(blob))
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    with pytest.raises(EvidenceError) as info:
        unpack_layer(tmp_path / "blob", "zstd", digest, root, UnpackBudget(OciSettings()))
    assert info.value.reason == "image.layer_format"
    assert "zstd" in str(info.value)
