"""Pure pod VM image formats against independent peers: newc cpio (GNU cpio), GPT (sfdisk),
fixed VHD footer (qemu-img where installed), module insmod order."""

from __future__ import annotations

import json
import shutil
import stat
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustpod.errors import ConfigError
from trustpod.image.cpio import CpioEntry, newc_archive
from trustpod.image.disk import ROOT_TYPE_X86_64, SECTOR, layout_for, vhd_footer
from trustpod.image.kernel import module_depends, module_order
from trustpod.image.vmimage import tree_digest, write_disk

ROOT_HASH = bytes(range(32))


def test_cpio_extracts_with_gnu_cpio(tmp_path: Path) -> None:
    if shutil.which("cpio") is None:
        pytest.skip("cpio not installed (apt-get install cpio)")
    entries = [
        CpioEntry("bin", stat.S_IFDIR | 0o755),
        CpioEntry("bin/tool", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n"),
        CpioEntry("bin/link", stat.S_IFLNK | 0o777, b"tool"),
        CpioEntry("etc", stat.S_IFDIR | 0o755),
        CpioEntry("etc/x", stat.S_IFREG | 0o644, b"abc"),
    ]
    archive = newc_archive(entries, mtime=1234)
    assert archive == newc_archive(list(reversed(entries)), mtime=1234)  # order-independent
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=archive, cwd=out, check=True)
    assert (out / "bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (out / "bin/tool").stat().st_mode & 0o777 == 0o755
    assert (out / "bin/link").readlink() == Path("tool")
    assert (out / "etc/x").stat().st_mtime == 1234


def test_cpio_refuses_escapes_and_duplicates() -> None:
    with pytest.raises(ValueError):
        newc_archive([CpioEntry("a/../../etc", stat.S_IFREG | 0o644)])
    with pytest.raises(ValueError):
        newc_archive([CpioEntry("a", stat.S_IFREG), CpioEntry("/a", stat.S_IFREG)])


def test_gpt_reads_back_with_sfdisk(tmp_path: Path) -> None:
    if shutil.which("sfdisk") is None:
        pytest.skip("sfdisk not installed (apt-get install fdisk)")
    root, hashdev = tmp_path / "root.img", tmp_path / "root.verity"
    root.write_bytes(b"R" * 3 * 1024 * 1024 + b"r")
    hashdev.write_bytes(b"H" * 8192)
    disk = tmp_path / "disk.raw"
    size = write_disk(root, hashdev, ROOT_HASH, disk)
    assert size % (1024 * 1024) == 0 and disk.stat().st_size == size
    res = subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, check=True)
    table = json.loads(res.stdout)["partitiontable"]
    assert table["label"] == "gpt"
    p1, p2 = table["partitions"]
    assert p1["start"] == 2048 and p1["uuid"].lower() == str(uuid.UUID(bytes=ROOT_HASH[:16]))
    assert p1["type"].lower() == ROOT_TYPE_X86_64
    assert p2["uuid"].lower() == str(uuid.UUID(bytes=ROOT_HASH[-16:]))
    with disk.open("rb") as f:
        f.seek(p1["start"] * SECTOR)
        assert f.read(root.stat().st_size) == root.read_bytes()
        f.seek(p2["start"] * SECTOR)
        assert f.read(8192) == hashdev.read_bytes()
    # sfdisk --verify finds no problems (backup header, CRCs, overlaps)
    verify = subprocess.run(["sfdisk", "--verify", str(disk)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # same inputs -> same bytes
    again = tmp_path / "again.raw"
    write_disk(root, hashdev, ROOT_HASH, again)
    assert again.read_bytes() == disk.read_bytes()


def test_vhd_footer_fields_and_checksum(tmp_path: Path) -> None:
    size = 64 * 1024 * 1024
    footer = vhd_footer(size, b"u" * 16, 946684800 + 100)
    assert len(footer) == 512 and footer[:8] == b"conectix"
    orig, cur = struct.unpack(">QQ", footer[40:56])
    assert orig == cur == size
    assert struct.unpack(">I", footer[60:64])[0] == 2  # fixed
    assert struct.unpack(">I", footer[24:28])[0] == 100
    zeroed = footer[:64] + b"\0\0\0\0" + footer[68:]
    assert struct.unpack(">I", footer[64:68])[0] == ~sum(zeroed) & 0xFFFFFFFF
    with pytest.raises(ValueError):
        vhd_footer(size + 512, b"u" * 16, 0)
    if shutil.which("qemu-img") is None:
        return
    # qemu-img's own fixed VHD of the same size: same geometry, sizes, type and layout
    raw, vhd = tmp_path / "d.raw", tmp_path / "d.vhd"
    with raw.open("wb") as f:
        f.truncate(size)
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "vpc",
            "-o",
            "subformat=fixed,force_size",
            str(raw),
            str(vhd),
        ],
        check=True,
    )
    theirs = vhd.read_bytes()[-512:]
    assert vhd.stat().st_size == size + 512
    # all but time, creator, geometry (qemu writes 65535/16/255 with force_size, we follow
    # the specification's CHS algorithm), checksum and id
    for lo, hi in ((0, 24), (40, 56), (60, 64), (84, 512)):
        assert footer[lo:hi] == theirs[lo:hi], (lo, hi)


def test_layout_is_mib_aligned() -> None:
    layout = layout_for(ROOT_HASH, 5 * 1024 * 1024 + 1, 40960)
    for p in layout.partitions:
        assert p.first_lba * SECTOR % (1024 * 1024) == 0
    assert layout.size % (1024 * 1024) == 0


def test_module_order_dependencies_first() -> None:
    deps = {
        "dm-verity": ("dm-bufio", "dm-mod", "reed_solomon"),
        "dm-bufio": ("dm-mod",),
        "dm-mod": (),
        "reed_solomon": (),
        "virtio_blk": ("virtio", "virtio_ring"),
        "virtio": (),
        "virtio_ring": (),
    }
    order = module_order(("virtio_blk", "dm_verity"), deps)
    assert set(order) == set(deps) and order[-1] == "dm-verity"
    assert all(order.index(d) < order.index(m) for m in order for d in deps[m])
    with pytest.raises(ConfigError):
        module_order(("nope",), deps)
    with pytest.raises(ConfigError):
        module_order(("a",), {"a": ("b",), "b": ("a",)})


def test_module_depends_reads_modinfo() -> None:
    ko = b"\x7fELF....license=GPL\0depends=dm-mod,dm-bufio\0vermagic=6.1\0"
    assert module_depends(ko) == ("dm-bufio", "dm-mod")
    assert module_depends(b"\0depends=\0") == ()
    assert module_depends(b"nothing") == ()


@given(st.binary(max_size=300))
def test_module_depends_never_raises(blob: bytes) -> None:
    assert isinstance(module_depends(blob), tuple)


def test_tree_digest_sees_content_mode_and_links(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    (tmp_path / "l").symlink_to("a")
    d0 = tree_digest(tmp_path)
    (tmp_path / "a").chmod(0o600)
    d1 = tree_digest(tmp_path)
    (tmp_path / "a").write_text("y")
    d2 = tree_digest(tmp_path)
    assert len({d0, d1, d2}) == 3


def test_rootfs_key_names_a_cached_build_by_its_inputs_and_hashes_anything_else(
    tmp_path: Path,
) -> None:
    from trustpod.image.vmimage import _rootfs_key

    digest = "ab" * 32
    built = tmp_path / "cache" / "rootfs" / digest
    built.mkdir(parents=True)
    (built / "etc").write_text("x")
    (built / ".trustpod-rootfs").write_text(digest + "\n")
    said: list[str] = []
    assert _rootfs_key(built, tmp_path / "cache", said.append) == f"inputs:{digest}"
    assert said == []  # no tree walk for build_rootfs' own output
    (built / ".trustpod-rootfs").write_text("cd" * 32 + "\n")  # marker of another build
    assert _rootfs_key(built, tmp_path / "cache", said.append) == tree_digest(built)
    (built / ".trustpod-rootfs").write_text(digest + "\n")
    assert _rootfs_key(built, None, said.append) == tree_digest(built)  # no cache: hashed
    elsewhere = tmp_path / "mine" / digest
    shutil.copytree(built, elsewhere)
    assert _rootfs_key(elsewhere, tmp_path / "cache", said.append) == tree_digest(elsewhere)
