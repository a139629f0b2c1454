"""The dm-verity fast path (ADR 0801): salted slot buffers, scatter reads, one CLI group loaded.

Byte compatibility with veritysetup itself is tests/test_verity_compat.py; these pin the pieces
the speed work introduced against the plain per-block definition H(salt || block).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.errors import EvidenceError
from trustpod.verity import fileio
from trustpod.verity.core import BlockHasher, VerityParams
from trustpod.verity.core.params import uuid_text
from trustpod.verity.files import format_files, verify_files


def _plain(algorithm: str, salt: bytes, hash_type: int, block: bytes) -> bytes:
    data = salt + block if hash_type == 1 else block + salt
    return hashlib.new(algorithm, data).digest()


@settings(max_examples=60, deadline=None)
@given(
    algorithm=st.sampled_from(["sha256", "sha512"]),
    salt=st.binary(max_size=256),
    hash_type=st.sampled_from([0, 1]),
    block_size=st.sampled_from([512, 1024, 4096]),
    count=st.integers(min_value=1, max_value=9),
    seed=st.binary(min_size=1, max_size=64),
)
def test_digest_slots_equal_per_block_definition(
    algorithm: str, salt: bytes, hash_type: int, block_size: int, count: int, seed: bytes
) -> None:
    params = VerityParams(algorithm=algorithm, salt=salt, hash_type=hash_type)
    hasher = BlockHasher(params)
    slots = hasher.slots(block_size, count)
    blocks = [(seed * (block_size // len(seed) + 1))[:block_size] for _ in range(count)]
    blocks = [bytes((b + i) % 256 for b in blk) for i, blk in enumerate(blocks)]
    for view, blk in zip(slots.blocks, blocks, strict=True):
        view[:] = blk
    want = b"".join(_plain(algorithm, salt, hash_type, b) for b in blocks)
    assert hasher.digest_slots(slots.slots) == want
    assert hasher.digests(b"".join(blocks), block_size) == want
    # the salt written once stays in place when the slots are refilled
    for view in slots.blocks:
        view[:] = b"\xff" * block_size
    assert hasher.digest_slots(slots.slots[:1]) == _plain(
        algorithm, salt, hash_type, b"\xff" * block_size
    )


def test_scatter_read_resumes_after_short_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(5 * 4096 + 100)
    f = tmp_path / "d"
    f.write_bytes(data)
    real = os.preadv

    def short(fd: int, buffers: list[memoryview], offset: int) -> int:
        # at most 3000 bytes per call: every call ends inside a buffer
        budget, out = 3000, []
        for b in buffers:
            if budget <= 0:
                break
            out.append(b[: min(len(b), budget)])
            budget -= len(out[-1])
        return real(fd, out, offset)

    monkeypatch.setattr(fileio.os, "preadv", short)
    bufs = [bytearray(4096) for _ in range(5)]
    fd = os.open(f, os.O_RDONLY)
    try:
        fileio.read_scatter(fd, [memoryview(b) for b in bufs], 100, "data device")
        assert b"".join(bufs) == data[100 : 100 + 5 * 4096]
        with pytest.raises(EvidenceError, match="truncated"):
            fileio.read_scatter(fd, [memoryview(bytearray(4096))], len(data) - 10, "data device")
    finally:
        os.close(fd)


@pytest.mark.parametrize("hash_type", [0, 1])
def test_threads_and_chunk_sizes_give_the_same_tree(tmp_path: Path, hash_type: int) -> None:
    data = tmp_path / "data.img"
    data.write_bytes(os.urandom(301 * 4096))
    params = VerityParams(salt=b"\x01" * 32, uuid=b"\x02" * 16, hash_type=hash_type)
    ref = format_files(data, tmp_path / "ref.hash", params)
    for workers, chunk in ((1, 4096), (2, 3 * 4096), (2, 1 << 20), (1, 64 << 20)):
        out = tmp_path / f"h-{workers}-{chunk}"
        res = format_files(data, out, params, workers=workers, chunk_bytes=chunk)
        assert res.root_hash == ref.root_hash
        assert out.read_bytes() == (tmp_path / "ref.hash").read_bytes()
        verify_files(data, out, res.root_hash, res.params, workers=workers, chunk_bytes=chunk)


def test_uuid_text_is_canonical() -> None:
    import uuid

    for _ in range(200):
        raw = os.urandom(16)
        assert uuid_text(raw) == str(uuid.UUID(bytes=raw))


def test_cli_loads_only_the_group_it_runs(tmp_path: Path) -> None:
    img = tmp_path / "d.img"
    img.write_bytes(os.urandom(2 * 4096))
    code = (
        "import sys\n"
        "from trustpod.cli.main import main\n"
        f"rc = main(['verity', 'format', {str(img)!r}, {str(tmp_path / 'h')!r}])\n"
        "others = [m for m in sys.modules if m.startswith('trustpod.cli.') and "
        "m not in ('trustpod.cli.main', 'trustpod.cli.verity')]\n"
        "print(rc, others, 'uuid' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "0 [] True"  # uuid4 for the random UUID: imported on use
    # help without a group still lists every group
    helptext = subprocess.run(
        [sys.executable, "-m", "trustpod.cli", "--help"], capture_output=True, text=True
    ).stdout
    for group in ("kbs", "verify", "verity", "image"):
        assert group in helptext
