"""Pure verity core: superblock parsing (hypothesis), geometry, hashing, parameter errors."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.errors import ConfigError, EvidenceError, TrustpodError
from trustpod.verity.core import (
    BlockHasher,
    Superblock,
    TreeGeometry,
    VerityParams,
    check_block_size,
    parse_salt,
    parse_uuid,
)
from trustpod.verity.core.superblock import (
    ALGORITHM_OFF,
    DATA_BLOCK_SIZE_OFF,
    SALT_SIZE_OFF,
    SIGNATURE_OFF,
    VERSION_OFF,
)

# The header veritysetup 2.6.1 wrote for `format --salt=aa --uuid=12345678-...` of 129 blocks.
GOLDEN_HEAD = bytes.fromhex(
    "7665726974790000"
    "01000000"
    "01000000"
    "12345678123412341234123456789abc" + "736861323536".ljust(64, "0") + "00100000"
    "00100000"
    "8100000000000000"
    "0100"
    "000000000000"
    "aa"
)


def _golden() -> bytes:
    return GOLDEN_HEAD.ljust(512, b"\0")


def test_golden_superblock_round_trip() -> None:
    sb = Superblock.from_bytes(_golden())
    assert sb.algorithm == "sha256"
    assert sb.uuid_text == "12345678-1234-1234-1234-123456789abc"
    assert (sb.data_block_size, sb.hash_block_size, sb.data_blocks) == (4096, 4096, 129)
    assert sb.salt == b"\xaa" and sb.hash_type == 1
    assert sb.to_bytes() == _golden()


@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [
        (SIGNATURE_OFF, b"VERITY\0\0", "verity.magic"),
        (VERSION_OFF, struct.pack("<I", 2), "verity.version"),
        (ALGORITHM_OFF, b"md5\0\0\0", "verity.algorithm"),
        (ALGORITHM_OFF, b"\xff\xfe\0", "verity.algorithm"),
        (DATA_BLOCK_SIZE_OFF, struct.pack("<I", 3000), "verity.block_size"),
        (DATA_BLOCK_SIZE_OFF, struct.pack("<I", 256), "verity.block_size"),
        (DATA_BLOCK_SIZE_OFF, struct.pack("<I", 1 << 20), "verity.block_size"),
        (SALT_SIZE_OFF, struct.pack("<H", 257), "verity.salt"),
        (12, struct.pack("<I", 2), "verity.hash_type"),
        (72, struct.pack("<Q", 0), "verity.data_blocks"),
    ],
)
def test_bad_superblock_fields(offset: int, value: bytes, reason: str) -> None:
    raw = bytearray(_golden())
    raw[offset : offset + len(value)] = value
    with pytest.raises(EvidenceError) as info:
        Superblock.from_bytes(bytes(raw))
    assert info.value.reason == reason
    assert info.value.fix or reason != "verity.magic"


def test_truncated_superblock() -> None:
    with pytest.raises(EvidenceError) as info:
        Superblock.from_bytes(_golden()[:300])
    assert info.value.reason == "verity.truncated" and info.value.fix


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_typed_errors(raw: bytes) -> None:
    try:
        Superblock.from_bytes(raw)
    except TrustpodError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 511), st.integers(0, 255), st.integers(1, 600))
def test_mutated_superblock_parses_or_raises_typed(pos: int, byte: int, cut: int) -> None:
    raw = bytearray(_golden())
    raw[pos] = byte
    try:
        sb = Superblock.from_bytes(bytes(raw[:cut]) if cut < 512 else bytes(raw))
    except TrustpodError:
        return
    assert Superblock.from_bytes(sb.to_bytes()) == sb


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["sha256", "sha512"]),
    st.sampled_from([512, 1024, 4096, 65536]),
    st.sampled_from([512, 4096, 524288]),
    st.integers(1, 1 << 40),
    st.binary(max_size=256),
    st.sampled_from([0, 1]),
)
def test_superblock_round_trip(alg: str, dbs: int, hbs: int, n: int, salt: bytes, ht: int) -> None:
    sb = Superblock(ht, bytes(range(16)), alg, dbs, hbs, n, salt)
    raw = sb.to_bytes()
    assert len(raw) == 512 and Superblock.from_bytes(raw) == sb


@pytest.mark.parametrize(
    ("blocks", "levels", "hash_blocks"),
    [(1, 0, 0), (2, 1, 1), (128, 1, 1), (129, 2, 3), (16384, 2, 129), (16385, 3, 132)],
)
def test_geometry_sha256_4k(blocks: int, levels: int, hash_blocks: int) -> None:
    geo = TreeGeometry.compute(VerityParams(data_blocks=blocks))
    assert len(geo.levels) == levels and geo.hash_blocks == hash_blocks
    assert geo.end_offset == (1 + hash_blocks) * 4096
    if levels:  # top level first on disk, one block at the top
        assert geo.levels[-1].blocks == 1 and geo.levels[-1].first_block == 1


def test_geometry_positions_with_offset_and_no_superblock() -> None:
    geo = TreeGeometry.compute(VerityParams(data_blocks=129, hash_offset=4608, superblock=False))
    assert geo.tree_start_block == 1  # cryptsetup truncates the offset to a hash block
    geo = TreeGeometry.compute(VerityParams(data_blocks=129, hash_offset=4608))
    assert geo.tree_start_block == 2  # superblock at 4608..5120, tree at the next block


def test_hasher_salt_order() -> None:
    block = bytes(range(256)) * 16
    one = BlockHasher(VerityParams(salt=b"salt"))
    zero = BlockHasher(VerityParams(salt=b"salt", hash_type=0))
    assert one.digest(block) == hashlib.sha256(b"salt" + block).digest()
    assert zero.digest(block) == hashlib.sha256(block + b"salt").digest()
    two = block * 2
    assert one.digests(two, 4096) == one.digest(block) * 2
    assert zero.digests(two, 4096) == zero.digest(block) * 2
    with pytest.raises(ValueError):
        one.digests(block[:100], 4096)


def test_parameter_errors() -> None:
    with pytest.raises(ConfigError):
        check_block_size(4095, "data block size", ConfigError)
    with pytest.raises(EvidenceError):
        parse_salt("zz")
    with pytest.raises(EvidenceError):
        parse_salt("00" * 257)
    assert parse_salt("-") == b""
    with pytest.raises(EvidenceError):
        parse_uuid("not-a-uuid")
    with pytest.raises(EvidenceError):
        VerityParams(hash_offset=100)
    with pytest.raises(EvidenceError):
        VerityParams(data_blocks=0)
    with pytest.raises(EvidenceError):
        VerityParams(algorithm="sha1")
