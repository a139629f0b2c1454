"""Image build on a small rootfs, the boot manifest, and the boot-time root check."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.cli.main import main
from trustpod.errors import EvidenceError, TrustpodError, VerificationError
from trustpod.image import BootManifest, check_root, expected_pcr11
from trustpod.image.build import BuildOptions, build_image
from trustpod.image.cmdline import build_cmdline, derived_partition_uuids, parse_cmdline
from trustpod.image.fsmakers import Ext4Maker, SquashfsMaker
from trustpod.verity.core import ROOT_LEVEL, VerityCorruption, VerityParams

needs_squashfs = pytest.mark.skipif(
    shutil.which("mksquashfs") is None, reason="squashfs-tools not installed"
)


def _rootfs(base: Path) -> Path:
    root = base / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("podvm\n")
    (root / "etc" / "os-release").write_text("ID=trustpod\nVERSION_ID=1\n")
    (root / "usr" / "bin" / "agent").write_bytes(random.Random(1).randbytes(300_000))
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BootManifest]:
    if shutil.which("mksquashfs") is None:
        pytest.skip("squashfs-tools not installed")
    base = tmp_path_factory.mktemp("img")
    out = base / "out"
    m = build_image(_rootfs(base), out, SquashfsMaker(), BuildOptions(osrel="ID=trustpod\n"))
    return out, m


def _copy(out: Path, tmp: Path) -> Path:
    dst = tmp / "copy"
    shutil.copytree(out, dst)
    return dst


@needs_squashfs
def test_build_writes_image_hash_and_manifest(built: tuple[Path, BootManifest]) -> None:
    out, m = built
    assert (out / "root.img").read_bytes()[:4] == b"hsqs"  # squashfs magic
    assert m.root_image.size == (out / "root.img").stat().st_size
    assert m.root_image.size % 4096 == 0
    loaded = BootManifest.loads((out / "manifest.json").read_text())
    assert loaded == m
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["verity"]["root_hash"] == m.root_hash
    assert f"roothash={m.root_hash}" in m.cmdline.split()
    assert doc["measurement"]["pcr11"] == expected_pcr11(m).hex()
    assert doc["measurement"]["sections"] == [".osrel", ".cmdline"]
    parsed = check_root(m, out / "root.img", out / "root.verity")
    assert parsed.root_hash.hex() == m.root_hash


@needs_squashfs
def test_build_is_reproducible(tmp_path: Path, built: tuple[Path, BootManifest]) -> None:
    _, m = built
    again = build_image(
        _rootfs(tmp_path), tmp_path / "o", SquashfsMaker(), BuildOptions(osrel="ID=trustpod\n")
    )
    assert again == m


@pytest.mark.skipif(shutil.which("mke2fs") is None, reason="e2fsprogs not installed")
def test_build_ext4(tmp_path: Path) -> None:
    m = build_image(_rootfs(tmp_path), tmp_path / "o", Ext4Maker())
    assert m.filesystem == "ext4" and m.osrel is None
    check_root(m.cmdline, tmp_path / "o" / "root.img", tmp_path / "o" / "root.verity")


@needs_squashfs
@pytest.mark.parametrize("target", ["root.img", "root.verity"])
def test_boot_check_refuses_a_corrupted_image(
    tmp_path: Path, built: tuple[Path, BootManifest], target: str
) -> None:
    out, m = built
    img = _copy(out, tmp_path)
    path = img / target
    raw = bytearray(path.read_bytes())
    pos = 5 * 4096 + 17 if target == "root.img" else len(raw) - 4096 + 3
    raw[pos] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(VerificationError) as info:
        check_root(m, img / "root.img", img / "root.verity")
    assert isinstance(info.value, VerityCorruption)
    if target == "root.img":
        assert (info.value.data_block, info.value.level) == (5, 0)
        assert "first corrupted data block 5" in info.value.message


@needs_squashfs
def test_boot_check_uses_the_measured_root_hash(
    tmp_path: Path, built: tuple[Path, BootManifest]
) -> None:
    out, m = built
    other = m.cmdline.replace(m.root_hash, "00" * 32)
    with pytest.raises(VerityCorruption) as info:
        check_root(other, out / "root.img", out / "root.verity")
    assert info.value.level == ROOT_LEVEL
    # a hash device whose superblock disagrees with the pinned options is refused before hashing
    bad_salt = m.cmdline.replace("salt=", "salt=00")
    with pytest.raises(VerificationError) as vinfo:
        check_root(bad_salt, out / "root.img", out / "root.verity")
    assert vinfo.value.reason == "image.verity_params_mismatch"
    with pytest.raises(EvidenceError) as einfo:
        check_root("console=ttyS0", out / "root.img", out / "root.verity")
    assert einfo.value.reason == "image.no_roothash"


@needs_squashfs
def test_tampered_manifest_is_refused(built: tuple[Path, BootManifest]) -> None:
    out, m = built
    doc = json.loads((out / "manifest.json").read_text())
    doc["measurement"]["pcr11"] = "00" * 32
    with pytest.raises(EvidenceError) as info:
        BootManifest.loads(json.dumps(doc))
    assert info.value.reason == "image.manifest_inconsistent"
    doc = json.loads((out / "manifest.json").read_text())
    doc["cmdline"] = doc["cmdline"].replace(m.root_hash, "11" * 32)
    with pytest.raises(EvidenceError):
        BootManifest.loads(json.dumps(doc))
    for bad in ("[]", "{}", "not json", json.dumps({"schema": "x"})):
        with pytest.raises(EvidenceError):
            BootManifest.loads(bad)


def test_cmdline_round_trip() -> None:
    params = VerityParams(data_blocks=77, salt=b"\x01\x02", uuid=bytes(range(16)))
    root = bytes(range(32))
    text = build_cmdline(root, params, extra="console=ttyS0")
    parsed = parse_cmdline(text)
    assert parsed.root_hash == root and parsed.params == params
    assert parsed.flags == ("panic-on-corruption",)
    data_uuid, hash_uuid = derived_partition_uuids(root)
    assert parsed.data_device == f"/dev/disk/by-partuuid/{data_uuid}"
    assert data_uuid.replace("-", "") == root[:16].hex()
    assert hash_uuid.replace("-", "") == root[16:].hex()
    assert text.split()[-1] == "console=ttyS0"
    nosb = VerityParams(data_blocks=5, superblock=False)
    assert parse_cmdline(build_cmdline(root, nosb)).params == nosb


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_parse_cmdline_raises_only_typed_errors(text: str) -> None:
    try:
        parse_cmdline(text)
    except TrustpodError:
        pass


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=20),
        lambda c: st.dictionaries(st.text(max_size=12), c, max_size=5) | st.lists(c, max_size=4),
        max_leaves=20,
    )
)
def test_manifest_loads_raises_only_typed_errors(doc: object) -> None:
    try:
        BootManifest.loads(json.dumps(doc))
    except TrustpodError:
        pass


@needs_squashfs
def test_cli_build_check_and_reference_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _rootfs(tmp_path)
    out = tmp_path / "out"
    assert main(["image", "build", "--rootfs", str(root), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "root hash:" in text and "pcr11:" in text
    manifest = out / "manifest.json"
    assert main(["image", "check", str(manifest)]) == 0
    assert main(["image", "reference-values", str(manifest), "--tee", "tpm"]) == 0
    msg = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert msg["type"] == "sample" and msg["version"] == "0.1.0"
    raw = bytearray((out / "root.img").read_bytes())
    raw[100] ^= 0xFF
    (out / "root.img").write_bytes(bytes(raw))
    assert main(["image", "check", str(manifest)]) == 1
    assert "first corrupted data block 0" in capsys.readouterr().err
    assert main(["image", "build", "--rootfs", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert main(["image", "reference-values", str(manifest), "--publish", "http://x"]) == 2


@needs_squashfs
def test_boot_pod_vm_measures_then_refuses_a_bad_root(
    tmp_path: Path, built: tuple[Path, BootManifest]
) -> None:
    from trustpod.image import boot_pod_vm
    from trustpod.image.measure import replay

    class Pcrs:
        def __init__(self) -> None:
            self.digests: list[bytes] = []

        def extend(self, pcr: int, digest: bytes) -> None:
            assert pcr == 11
            self.digests.append(digest)

    out, m = built
    good = Pcrs()
    assert boot_pod_vm(good, m, out / "root.img", out / "root.verity") == expected_pcr11(m)
    assert replay(good.digests).hex() == m.pcr11_sha256
    img = _copy(out, tmp_path)
    raw = bytearray((img / "root.img").read_bytes())
    raw[-1] ^= 0x80
    (img / "root.img").write_bytes(bytes(raw))
    bad = Pcrs()
    with pytest.raises(VerityCorruption) as info:
        boot_pod_vm(bad, m, img / "root.img", img / "root.verity")
    assert info.value.data_block == len(raw) // 4096 - 1
    assert len(bad.digests) == 4  # measured first, like systemd-stub before the initrd
