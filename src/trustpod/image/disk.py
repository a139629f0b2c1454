"""The pod VM disk: GPT with the verity data and hash partitions, and Azure's fixed VHD. Pure.

GPT (UEFI 2.10 §5.3): LBA 0 a protective MBR (one 0xEE partition), LBA 1 the header
("EFI PART", revision 1.0, 92 bytes, CRC32 of the header with its CRC field zeroed, CRC32 of
the entry array), LBA 2..33 128 entries of 128 bytes (type GUID, unique GUID, first/last LBA,
attributes, UTF-16LE name); the backup entries and header sit at the end of the disk.
Partitions are 1 MiB aligned. Partition UUIDs are the ones systemd-veritysetup-generator derives
from the root hash (first/last 128 bits), types are the x86-64 root / root-verity types
(Discoverable Partitions Specification), the disk GUID derives from the root hash too: the
same root gives the same disk bytes.

VHD (Microsoft "Virtual Hard Disk Image Format Specification", fixed disk): the raw disk
followed by a 512-byte big-endian footer ("conectix", features 2, version 1.0, data offset
all ones, timestamp in seconds since 2000-01-01, creator "tpod", original and current size,
CHS geometry, type 2 = fixed, checksum = one's complement of the byte sum, unique id). Azure
requires a fixed VHD whose virtual size is a whole number of MiB.
"""

from __future__ import annotations

import hashlib
import struct
import uuid as uuidlib
import zlib
from dataclasses import dataclass

__all__ = [
    "MIB",
    "ROOT_TYPE_X86_64",
    "ROOT_VERITY_TYPE_X86_64",
    "SECTOR",
    "DiskLayout",
    "Partition",
    "gpt_disk_head_tail",
    "layout_for",
    "vhd_footer",
]

SECTOR = 512
MIB = 1024 * 1024
_ENTRIES = 128
_ENTRY_SIZE = 128
_ENTRY_SECTORS = _ENTRIES * _ENTRY_SIZE // SECTOR  # 32
#: Discoverable Partitions Specification: root (x86-64) and root verity (x86-64)
ROOT_TYPE_X86_64 = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
ROOT_VERITY_TYPE_X86_64 = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5"
_VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    type_guid: str
    part_guid: str
    first_lba: int
    size: int  # bytes of content (the partition spans whole MiBs)

    @property
    def last_lba(self) -> int:
        return self.first_lba + _round_up(self.size, MIB) // SECTOR - 1


@dataclass(frozen=True, slots=True)
class DiskLayout:
    disk_guid: str
    size: int  # bytes, a multiple of 1 MiB
    partitions: tuple[Partition, ...]


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def layout_for(root_hash: bytes, data_size: int, hash_size: int) -> DiskLayout:
    """Partition 1 = verity data (root filesystem), 2 = verity hash device; 1 MiB aligned, and
    1 MiB at the end for the backup GPT."""
    data_uuid = str(uuidlib.UUID(bytes=root_hash[:16]))
    hash_uuid = str(uuidlib.UUID(bytes=root_hash[-16:]))
    disk_guid = str(
        uuidlib.UUID(bytes=hashlib.sha256(b"trustpod disk\0" + root_hash).digest()[:16])
    )
    first = MIB // SECTOR
    p1 = Partition("root-x86-64", ROOT_TYPE_X86_64, data_uuid, first, data_size)
    p2 = Partition(
        "root-x86-64-verity", ROOT_VERITY_TYPE_X86_64, hash_uuid, p1.last_lba + 1, hash_size
    )
    size = (p2.last_lba + 1) * SECTOR + MIB
    return DiskLayout(disk_guid, size, (p1, p2))


def _guid(text: str) -> bytes:
    return uuidlib.UUID(text).bytes_le


def _entries(layout: DiskLayout) -> bytes:
    out = bytearray()
    for p in layout.partitions:
        name = p.name.encode("utf-16-le").ljust(72, b"\0")
        out += _guid(p.type_guid) + _guid(p.part_guid)
        out += struct.pack("<QQQ", p.first_lba, p.last_lba, 0) + name
    return bytes(out.ljust(_ENTRIES * _ENTRY_SIZE, b"\0"))


def _header(layout: DiskLayout, current: int, backup: int, entries_lba: int, crc: int) -> bytes:
    last_lba = layout.size // SECTOR - 1
    first_usable = 2 + _ENTRY_SECTORS
    last_usable = last_lba - 1 - _ENTRY_SECTORS
    fields = struct.pack(
        "<8sIIIIQQQQ16sQIII",
        b"EFI PART",
        0x00010000,
        92,
        0,
        0,
        current,
        backup,
        first_usable,
        last_usable,
        _guid(layout.disk_guid),
        entries_lba,
        _ENTRIES,
        _ENTRY_SIZE,
        crc,
    )
    hcrc = zlib.crc32(fields)
    return (fields[:16] + struct.pack("<I", hcrc) + fields[20:]).ljust(SECTOR, b"\0")


def _protective_mbr(total_sectors: int) -> bytes:
    count = min(total_sectors - 1, 0xFFFFFFFF)
    entry = struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, count)
    return b"\0" * 446 + entry + b"\0" * 48 + b"\x55\xaa"


def gpt_disk_head_tail(layout: DiskLayout) -> tuple[bytes, bytes]:
    """(bytes at offset 0, bytes ending at the end of the disk): MBR + primary GPT, and the
    backup entries + backup header."""
    last_lba = layout.size // SECTOR - 1
    entries = _entries(layout)
    crc = zlib.crc32(entries)
    head = _protective_mbr(layout.size // SECTOR) + _header(layout, 1, last_lba, 2, crc) + entries
    tail = entries + _header(layout, last_lba, 1, last_lba - _ENTRY_SECTORS, crc)
    return head, tail


def _chs(size: int) -> tuple[int, int, int]:
    """CHS geometry per the VHD specification's algorithm."""
    total = min(size // SECTOR, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def vhd_footer(size: int, unique_id: bytes, timestamp: int) -> bytes:
    """The 512-byte fixed-VHD footer for a raw disk of ``size`` bytes (a multiple of 1 MiB)."""
    if size <= 0 or size % MIB:
        raise ValueError("a VHD for Azure must be a whole number of MiB")
    cyl, heads, spt = _chs(size)
    stamp = max(0, timestamp - _VHD_EPOCH) & 0xFFFFFFFF
    body = struct.pack(
        ">8sIIQI4sIIQQHBBII16sB",
        b"conectix",
        2,
        0x00010000,
        0xFFFFFFFFFFFFFFFF,
        stamp,
        b"tpod",
        0x00010000,
        0x5769326B,  # "Wi2k"
        size,
        size,
        cyl,
        heads,
        spt,
        2,
        0,
        unique_id[:16].ljust(16, b"\0"),
        0,
    )
    checksum = ~sum(body) & 0xFFFFFFFF
    body = body[:64] + struct.pack(">I", checksum) + body[68:]
    return body.ljust(SECTOR, b"\0")
