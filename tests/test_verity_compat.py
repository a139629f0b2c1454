"""Byte-for-byte comparison of ``trustpod verity format`` with the real ``veritysetup format``."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from trustpod.cli.main import main
from trustpod.verity.core import VerityParams, parse_uuid
from trustpod.verity.files import format_files, verify_files

pytestmark = [
    pytest.mark.veritysetup,
    pytest.mark.skipif(shutil.which("veritysetup") is None, reason="veritysetup not installed"),
]

UUID = "12345678-1234-1234-1234-123456789abc"
SALT = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def _data(path: Path, size: int, seed: int) -> Path:
    rng = random.Random(seed)
    head = rng.randbytes(min(size, 256 * 1024))
    with path.open("wb") as f:
        f.write(head)
        if size > len(head):  # the rest: a few random blocks spread over a sparse file
            for _ in range(8):
                f.seek(rng.randrange(len(head), size))
                f.write(rng.randbytes(64))
            f.truncate(size)
    return path


def _veritysetup(*args: str, cwd: Path) -> str:
    out = subprocess.run(
        ["veritysetup", *args], cwd=cwd, capture_output=True, text=True, check=True
    )
    return out.stdout


def _ours(args: list[str], cwd: Path, capsys: pytest.CaptureFixture[str]) -> str:
    import os

    old = os.getcwd()
    os.chdir(cwd)
    try:
        assert main(["verity", *args]) == 0
    finally:
        os.chdir(old)
    return capsys.readouterr().out


# (data blocks, data block size, hash block size, hash): level boundaries and odd counts
CASES = [
    (1, 4096, 4096, "sha256"),
    (2, 4096, 4096, "sha256"),
    (127, 4096, 4096, "sha256"),
    (128, 4096, 4096, "sha256"),
    (129, 4096, 4096, "sha256"),
    (1000, 4096, 4096, "sha256"),
    (16385, 4096, 4096, "sha256"),
    (64, 4096, 4096, "sha512"),
    (65, 4096, 4096, "sha512"),
    (4097, 4096, 4096, "sha512"),
    (16, 512, 512, "sha256"),
    (17, 512, 512, "sha256"),
    (256, 512, 512, "sha256"),
    (257, 512, 512, "sha256"),
    (4097, 512, 512, "sha256"),
    (9, 512, 512, "sha512"),
    (65, 512, 512, "sha512"),
    (333, 1024, 512, "sha512"),
    (1000, 1024, 4096, "sha256"),
    (77, 4096, 1024, "sha256"),
    (515, 512, 1024, "sha512"),
]


@pytest.mark.parametrize(("blocks", "dbs", "hbs", "alg"), CASES)
def test_format_matches_veritysetup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], blocks: int, dbs: int, hbs: int, alg: str
) -> None:
    _data(tmp_path / "data.img", blocks * dbs, seed=blocks * 7 + dbs)
    opts = [f"--hash={alg}", f"--data-block-size={dbs}", f"--hash-block-size={hbs}"]
    opts += [f"--salt={SALT}", f"--uuid={UUID}"]
    ref = _veritysetup("format", "data.img", "ref.img", *opts, cwd=tmp_path)
    ours = _ours(["format", "data.img", "ours.img", *opts], tmp_path, capsys)
    assert ours == ref.replace("ref.img", "ours.img")
    assert (tmp_path / "ours.img").read_bytes() == (tmp_path / "ref.img").read_bytes()
    root = next(ln.split()[-1] for ln in ours.splitlines() if ln.startswith("Root hash"))
    _veritysetup("verify", "data.img", "ours.img", root, cwd=tmp_path)
    assert (
        main(["verity", "verify", str(tmp_path / "data.img"), str(tmp_path / "ref.img"), root]) == 0
    )


@pytest.mark.parametrize(
    "extra",
    [
        ["--no-superblock"],
        ["--salt=-"],
        ["--salt=" + "ab" * 256],
        ["--format=0"],
        ["--format=0", "--no-superblock"],
        ["--hash-offset=8192"],
        ["--no-superblock", "--hash-offset=8192"],
        ["--hash-offset=4608"],
        ["--no-superblock", "--hash-offset=4608"],
    ],
)
def test_options_match_veritysetup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    _data(tmp_path / "data.img", 300 * 4096, seed=3)
    opts = [f"--uuid={UUID}"] + (
        [] if any(e.startswith("--salt") for e in extra) else [f"--salt={SALT}"]
    )
    opts += extra
    ref = _veritysetup("format", "data.img", "ref.img", *opts, cwd=tmp_path)
    ours = _ours(["format", "data.img", "ours.img", *opts], tmp_path, capsys)
    assert ours == ref.replace("ref.img", "ours.img")
    assert (tmp_path / "ours.img").read_bytes() == (tmp_path / "ref.img").read_bytes()


@pytest.mark.parametrize("superblock", [True, False])
def test_data_and_hash_in_one_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], superblock: bool
) -> None:
    blocks = 200
    for name in ("ref.img", "ours.img"):
        _data(tmp_path / name, blocks * 4096, seed=11)
    opts = [f"--salt={SALT}", f"--uuid={UUID}", f"--hash-offset={blocks * 4096}"]
    opts += [f"--data-blocks={blocks}"] + ([] if superblock else ["--no-superblock"])
    ref = _veritysetup("format", "ref.img", "ref.img", *opts, cwd=tmp_path)
    ours = _ours(["format", "ours.img", "ours.img", *opts], tmp_path, capsys)
    assert ours == ref.replace("ref.img", "ours.img")
    assert (tmp_path / "ours.img").read_bytes() == (tmp_path / "ref.img").read_bytes()
    root = next(ln.split()[-1] for ln in ours.splitlines() if ln.startswith("Root hash"))
    verify_opts = [opts[0], *opts[2:]]  # no-superblock verify needs the salt, not the UUID
    _veritysetup("verify", "ours.img", "ours.img", root, *verify_opts, cwd=tmp_path)
    argv = ["verity", "verify", str(tmp_path / "ref.img"), str(tmp_path / "ref.img"), root]
    assert main([*argv, *verify_opts]) == 0


def test_dump_matches_veritysetup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _data(tmp_path / "data.img", 129 * 4096, seed=5)
    _veritysetup("format", "data.img", "ref.img", f"--salt={SALT}", f"--uuid={UUID}", cwd=tmp_path)
    ref = _veritysetup("dump", "ref.img", cwd=tmp_path)
    assert _ours(["dump", "ref.img"], tmp_path, capsys) == ref


def test_veritysetup_and_library_agree_on_root(tmp_path: Path) -> None:
    data = _data(tmp_path / "data.img", 50 * 4096, seed=9)
    params = VerityParams(salt=bytes.fromhex(SALT), uuid=parse_uuid(UUID))
    result = format_files(data, tmp_path / "h.img", params)
    _veritysetup("verify", "data.img", "h.img", result.root_hash.hex(), cwd=tmp_path)
    verify_files(data, tmp_path / "h.img", result.root_hash, result.params)
