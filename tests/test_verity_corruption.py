"""Corruption detection: one flipped bit anywhere in data or tree is found and located."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from trustpod.cli.main import main
from trustpod.errors import ConfigError, EvidenceError
from trustpod.verity.core import ROOT_LEVEL, TreeGeometry, VerityCorruption, VerityParams
from trustpod.verity.files import FormatResult, format_files, verify_files

SALT = bytes.fromhex("5a" * 32)


def _image(tmp_path: Path, blocks: int, **kw: object) -> tuple[Path, Path, FormatResult]:
    data = tmp_path / "data.img"
    data.write_bytes(random.Random(blocks).randbytes(blocks * 1024))
    params = VerityParams(data_block_size=1024, hash_block_size=512, salt=SALT, **kw)  # type: ignore[arg-type]
    res = format_files(data, tmp_path / "hash.img", params, chunk_bytes=8192)
    return data, tmp_path / "hash.img", res


def _flip(path: Path, byte: int, bit: int) -> None:
    with path.open("r+b") as f:
        f.seek(byte)
        old = f.read(1)[0]
        f.seek(byte)
        f.write(bytes([old ^ (1 << bit)]))


def _expect_tree(geo: TreeGeometry, byte: int) -> tuple[int, int]:
    """(first data block, level) verify must report for a flip at ``byte`` of the hash file."""
    block = byte // geo.params.hash_block_size
    for level in geo.levels:
        if level.first_block <= block < level.first_block + level.blocks:
            j = block - level.first_block
            if level.index == len(geo.levels) - 1:
                return 0, ROOT_LEVEL
            return geo.data_range(level.index + 1, j)[0], level.index + 1
    raise AssertionError("not a tree byte")


def test_clean_image_verifies(tmp_path: Path) -> None:
    data, hashf, res = _image(tmp_path, 300)
    assert len(res.geometry.levels) == 3
    verify_files(data, hashf, res.root_hash, res.params, chunk_bytes=4096)


@pytest.mark.parametrize("seed", range(4))
def test_flipped_data_bit_is_found(tmp_path: Path, seed: int) -> None:
    data, hashf, res = _image(tmp_path, 300)
    rng = random.Random(seed)
    for _ in range(10):
        byte, bit = rng.randrange(300 * 1024), rng.randrange(8)
        _flip(data, byte, bit)
        with pytest.raises(VerityCorruption) as info:
            verify_files(data, hashf, res.root_hash, res.params, chunk_bytes=4096)
        assert (info.value.data_block, info.value.level) == (byte // 1024, 0)
        assert info.value.reason == "verity.data_corrupted"
        _flip(data, byte, bit)


@pytest.mark.parametrize("seed", range(4))
def test_flipped_tree_bit_is_found(tmp_path: Path, seed: int) -> None:
    data, hashf, res = _image(tmp_path, 300)
    geo = res.geometry
    start = geo.tree_start_block * 512
    rng = random.Random(seed)
    for _ in range(15):
        byte, bit = rng.randrange(start, geo.end_offset), rng.randrange(8)
        _flip(hashf, byte, bit)
        with pytest.raises(VerityCorruption) as info:
            verify_files(data, hashf, res.root_hash, res.params, chunk_bytes=4096)
        assert (info.value.data_block, info.value.level) == _expect_tree(geo, byte), byte
        _flip(hashf, byte, bit)


def test_every_tree_byte_of_a_small_image(tmp_path: Path) -> None:
    data, hashf, res = _image(tmp_path, 40)
    geo = res.geometry
    for byte in range(geo.tree_start_block * 512, geo.end_offset, 7):
        _flip(hashf, byte, byte % 8)
        with pytest.raises(VerityCorruption):
            verify_files(data, hashf, res.root_hash, res.params)
        _flip(hashf, byte, byte % 8)


def test_single_block_image_and_wrong_root(tmp_path: Path) -> None:
    data, hashf, res = _image(tmp_path, 1)
    assert res.geometry.hash_blocks == 0
    _flip(data, 5, 0)
    with pytest.raises(VerityCorruption) as info:
        verify_files(data, hashf, res.root_hash, res.params)
    assert info.value.level == ROOT_LEVEL and info.value.reason == "verity.root_hash_mismatch"


@pytest.mark.skipif(shutil.which("veritysetup") is None, reason="veritysetup not installed")
@pytest.mark.veritysetup
def test_veritysetup_agrees_that_flips_are_corruption(tmp_path: Path) -> None:
    data, hashf, res = _image(tmp_path, 300)
    rng = random.Random(1)
    for path, limit in ((data, 300 * 1024), (hashf, res.geometry.end_offset)):
        lo = 0 if path == data else res.geometry.tree_start_block * 512
        byte = rng.randrange(lo, limit)
        _flip(path, byte, 3)
        rc = subprocess.run(
            ["veritysetup", "verify", str(data), str(hashf), res.root_hash.hex()],
            capture_output=True,
        ).returncode
        assert rc != 0
        _flip(path, byte, 3)


def test_truncated_files_and_partial_tail(tmp_path: Path) -> None:
    data, hashf, res = _image(tmp_path, 50)
    with hashf.open("r+b") as f:
        f.truncate(res.geometry.end_offset - 1)
    with pytest.raises(EvidenceError) as info:
        verify_files(data, hashf, res.root_hash, res.params)
    assert info.value.reason == "verity.truncated"
    with data.open("ab") as f:
        f.write(b"tail")
    params = VerityParams(data_block_size=1024, hash_block_size=512, salt=SALT)
    with pytest.raises(EvidenceError) as info:
        format_files(data, tmp_path / "h2.img", params)
    assert info.value.reason == "verity.partial_block" and "--allow-partial-tail" in (
        info.value.fix or ""
    )
    res2 = format_files(data, tmp_path / "h2.img", params, allow_partial_tail=True)
    assert res2.params.data_blocks == 50 and res2.root_hash == res.root_hash
    with pytest.raises(EvidenceError):
        format_files(data, tmp_path / "h3.img", params, data_blocks=51)
    with pytest.raises(ConfigError) as cinfo:
        format_files(data, data, params, data_blocks=50)
    assert cinfo.value.reason == "verity.overlap"


def test_cli_errors_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, hashf, res = _image(tmp_path, 20)
    base = ["verity", "verify", str(data), str(hashf)]
    assert main([*base, res.root_hash.hex()]) == 0
    assert main([*base, "00" * 32]) == 1
    assert "verity.root_hash_mismatch" in capsys.readouterr().err
    assert main([*base, "zz"]) == 2
    assert main(["verity", "dump", str(data)]) == 4
    assert "verity.magic" in capsys.readouterr().err
    out = tmp_path / "x.img"
    assert main(["verity", "format", str(data), str(out), "--hash", "md5"]) == 2
    assert main(["verity", "format", str(data), str(out), "--data-block-size", "1000"]) == 2
    assert main(["verity", "format", str(tmp_path / "missing"), str(out)]) == 2
    _flip(data, 3 * 1024 + 1, 1)
    assert main([*base, res.root_hash.hex()]) == 1
    assert "first corrupted data block 3" in capsys.readouterr().err


def test_progress_only_on_a_terminal(tmp_path: Path) -> None:
    import io

    from trustpod.verity.progress import TerminalProgress, terminal_progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert terminal_progress("format", io.StringIO()) is None
    tty = Tty()
    bar = terminal_progress("format", tty)
    assert isinstance(bar, TerminalProgress)
    calls: list[tuple[int, int]] = []

    def record(done: int, total: int) -> None:
        calls.append((done, total))
        bar(done, total)

    data = tmp_path / "d.img"
    data.write_bytes(random.Random(0).randbytes(64 * 4096))
    format_files(data, tmp_path / "h.img", VerityParams(), chunk_bytes=16 * 4096, progress=record)
    assert calls[-1] == (64 * 4096, 64 * 4096) and len(calls) == 4
    assert tty.getvalue().endswith("\n") and "format [" in tty.getvalue()
