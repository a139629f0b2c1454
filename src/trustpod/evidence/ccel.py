"""TCG crypto-agile CC event log (the ACPI CCEL table's log area), parsed and replayed. Pure.

Format (TCG PC Client PFP 1.06 §10; UEFI 2.11 §38 for the CC mapping; trustee
``deps/eventlog``): a legacy first event (``u32 mr, u32 type, 20-byte SHA-1, u32 size, data``)
whose data is the ``Spec ID Event03`` structure listing ``(alg id, digest size)`` pairs; then
events ``u32 mr_index, u32 type, u32 digest_count, {u16 alg, digest}*, u32 size, data``. A u64
of all ones or all zeros ends the log (the table is padded). CC measurement register index
1..4 maps to TDX RTMR0..3; replay is ``mr = H(mr || digest)`` from zeros.

Claims (``uefi_event_logs``) follow upstream's JSON: ``index, type_name, digests[{alg, digest}],
event (b64 std), details{...}, digest_matches_event``.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import unicodedata
from dataclasses import dataclass
from typing import Any

from trustpod.errors import EvidenceError

__all__ = ["ALGORITHMS", "EVENT_TYPES", "MAX_CCEL_BYTES", "MAX_EVENTS", "CcEvent", "CcEventLog"]

MAX_CCEL_BYTES = 4 * 1024 * 1024  #: named limit (real logs: 64 KiB - 1 MiB tables)
MAX_EVENTS = 20_000  #: named limit
#: TCG algorithm id -> (name in claims, hashlib name, digest size)
ALGORITHMS: dict[int, tuple[str, str, int]] = {
    0x4: ("SHA-1", "sha1", 20),
    0xB: ("SHA-256", "sha256", 32),
    0xC: ("SHA-384", "sha384", 48),
    0xD: ("SHA-512", "sha512", 64),
}
_BLANK, _SIMPLE, _STRING, _FLAGS, _EFIVAR = "blank", "simple", "string", "flags", "efivar"
_IPL, _TAG = "ipl", "tag"
_GCE_IPL_PREFIX = b"\x2e\x00"  # Google Cloud's EV_IPL: UTF-16LE after this prefix
#: event type -> (name, details parser)
EVENT_TYPES: dict[int, tuple[str, str]] = {
    0x0: ("EV_PREBOOT_CERT", _BLANK),
    0x1: ("EV_POST_CODE", _SIMPLE),
    0x2: ("EV_UNUSED", _BLANK),
    0x3: ("EV_NO_ACTION", _BLANK),
    0x4: ("EV_SEPARATOR", _BLANK),
    0x5: ("EV_ACTION", _SIMPLE),
    0x6: ("EV_EVENT_TAG", _TAG),
    0x7: ("EV_S_CRTM_CONTENTS", _BLANK),
    0x8: ("EV_S_CRTM_VERSION", _BLANK),
    0x9: ("EV_CPU_MICROCODE", _BLANK),
    0xA: ("EV_PLATFORM_CONFIG_FLAGS", _FLAGS),
    0xB: ("EV_TABLE_OF_DEVICES", _BLANK),
    0xC: ("EV_COMPACT_HASH", _SIMPLE),
    0xD: ("EV_IPL", _IPL),
    0xE: ("EV_IPL_PARTITION_DATA", _BLANK),
    0xF: ("EV_NONHOST_CODE", _BLANK),
    0x10: ("EV_NONHOST_CONFIG", _BLANK),
    0x11: ("EV_NONHOST_INFO", _BLANK),
    0x12: ("EV_OMIT_BOOT_DEVICE_EVENTS", _SIMPLE),
    0x80000000: ("EV_EFI_EVENT_BASE", _BLANK),
    0x80000001: ("EV_EFI_VARIABLE_DRIVER_CONFIG", _EFIVAR),
    0x80000002: ("EV_EFI_VARIABLE_BOOT", _EFIVAR),
    0x80000003: ("EV_EFI_BOOT_SERVICES_APPLICATION", _BLANK),
    0x80000004: ("EV_EFI_BOOT_SERVICES_DRIVER", _BLANK),
    0x80000005: ("EV_EFI_RUNTIME_SERVICES_DRIVER", _BLANK),
    0x80000006: ("EV_EFI_GPT_EVENT", _BLANK),
    0x80000007: ("EV_EFI_ACTION", _SIMPLE),
    0x80000008: ("EV_EFI_PLATFORM_FIRMWARE_BLOB", _BLANK),
    0x80000009: ("EV_EFI_HANDOFF_TABLES", _BLANK),
    0x8000000A: ("EV_EFI_PLATFORM_FIRMWARE_BLOB2", _STRING),
    0x8000000B: ("EV_EFI_HANDOFF_TABLES2", _STRING),
    0x8000000C: ("EV_EFI_VARIABLE_BOOT2", _EFIVAR),
    0x80000010: ("EV_EFI_HCRTM_EVENT", _BLANK),
    0x800000E0: ("EV_EFI_VARIABLE_AUTHORITY", _EFIVAR),
    0x800000E1: ("EV_EFI_SPDM_FIRMWARE_BLOB", _BLANK),
    0x800000E2: ("EV_EFI_SPDM_FIRMWARE_CONFIG", _BLANK),
}
_EV_NO_ACTION = 0x3
_SPEC_ID_ALGS_OFFSET = 24  # signature(16) + platformClass(4) + versions/errata/uintn(4)
_LEGACY_DIGEST = 20


def _fail(msg: str) -> EvidenceError:
    return EvidenceError(f"CC event log: {msg}", reason="tdx.ccel_malformed")


@dataclass(frozen=True, slots=True)
class CcEvent:
    index: int  # CC measurement register index (1..4 = RTMR0..3 on TDX)
    event_type: int
    digests: tuple[tuple[int, bytes], ...]  # (TCG alg id, digest)
    data: bytes

    @property
    def type_name(self) -> str:
        return EVENT_TYPES[self.event_type][0]

    def details(self) -> dict[str, Any]:
        return _details(EVENT_TYPES[self.event_type][1], self.data)

    def digest_matches_event(self) -> bool:
        for alg, digest in self.digests:
            hname = ALGORITHMS[alg][1]
            if hashlib.new(hname, self.data).digest() == digest:
                return True
        return False

    def claim(self) -> dict[str, Any]:
        return {
            "details": self.details(),
            "digest_matches_event": self.digest_matches_event(),
            "digests": [{"alg": ALGORITHMS[a][0], "digest": d.hex()} for a, d in self.digests],
            "event": base64.b64encode(self.data).decode("ascii"),
            "index": self.index,
            "type_name": self.type_name,
        }


def _details(kind: str, data: bytes) -> dict[str, Any]:
    if kind == _SIMPLE:
        try:
            return {"string": data.decode("utf-8")}
        except UnicodeDecodeError as exc:
            raise _fail("event string is not UTF-8") from exc
    if kind == _IPL:  # vendor defined: UTF-8 up to NUL (hex if not UTF-8), or GCE UTF-16
        if len(data) < 2:
            raise _fail("EV_IPL data shorter than 2 bytes")
        if data[:2] == _GCE_IPL_PREFIX:
            end = len(data) - 2  # upstream drops the last code unit (the terminator)
            if end <= 2 or end % 2:
                raise _fail("EV_IPL GCE string is not UTF-16")
            return {"string": data[2:end].decode("utf-16-le", errors="replace")}
        head = data.split(b"\x00", 1)[0]
        try:
            return {"string": head.decode("utf-8")}
        except UnicodeDecodeError:
            return {"string": data.hex()}
    if kind == _TAG:  # TCG_PCClientTaggedEvent: u32 id, u32 size, data
        if len(data) < 8:
            raise _fail("EV_EVENT_TAG data truncated")
        (size,) = struct.unpack_from("<I", data, 4)
        if 8 + size > len(data):
            raise _fail("EV_EVENT_TAG description truncated")
        try:
            return {"string": data[8 : 8 + size].decode("utf-8").replace("\x00", "")}
        except UnicodeDecodeError as exc:
            raise _fail("EV_EVENT_TAG description is not UTF-8") from exc
    if kind == _STRING:  # u8 size + description (UEFI_PLATFORM_FIRMWARE_BLOB2 & co.)
        # upstream reads bytes [1, size): the description minus its last byte (its NUL)
        if not data or len(data) < data[0]:
            raise _fail("description string truncated")
        try:
            return {"string": data[1 : data[0]].decode("utf-8")}
        except UnicodeDecodeError as exc:
            raise _fail("description string is not UTF-8") from exc
    if kind == _FLAGS:  # td-shim style: non-UTF-8 -> "", 0x10 -> space, Cc chars dropped
        try:
            text = data.decode("utf-8").replace("\x10", " ")
        except UnicodeDecodeError:
            text = ""
        return {"string": "".join(c for c in text if unicodedata.category(c) != "Cc")}
    if kind == _EFIVAR:  # UEFI_VARIABLE_DATA
        if len(data) < 32:
            raise _fail("UEFI_VARIABLE_DATA truncated")
        guid = data[:16].hex()
        name_len, var_len = struct.unpack_from("<QQ", data, 16)
        end_name = 32 + 2 * name_len
        if end_name > len(data) or end_name + var_len > len(data):
            raise _fail("UEFI_VARIABLE_DATA name/data out of bounds")
        try:
            name = data[32:end_name].decode("utf-16-le")
        except UnicodeDecodeError as exc:
            raise _fail("UEFI variable name is not UTF-16") from exc
        var = data[end_name : end_name + var_len]
        return {
            "unicode_name": name,
            "unicode_name_length": name_len,
            "variable_data": base64.b64encode(var).decode("ascii") if var_len else "",
            "variable_data_length": var_len,
            "variable_name": "-".join(
                (guid[0:8], guid[8:12], guid[12:16], guid[16:20], guid[20:32])
            ),
        }
    return {}


@dataclass(frozen=True, slots=True)
class CcEventLog:
    events: tuple[CcEvent, ...]
    digest_sizes: tuple[tuple[int, int], ...]  # from the Spec ID event

    @classmethod
    def parse(cls, raw: bytes, *, max_bytes: int = MAX_CCEL_BYTES) -> CcEventLog:
        if len(raw) > max_bytes:
            raise _fail(f"{len(raw)} bytes is over the limit of {max_bytes}")
        try:
            return cls._parse(bytes(raw))
        except struct.error as exc:
            raise _fail(f"truncated: {exc}") from exc

    @classmethod
    def _parse(cls, raw: bytes) -> CcEventLog:
        _mr, etype = struct.unpack_from("<II", raw, 0)
        (size,) = struct.unpack_from("<I", raw, 8 + _LEGACY_DIGEST)
        off = 12 + _LEGACY_DIGEST
        if etype != _EV_NO_ACTION or off + size > len(raw):
            raise _fail("first event is not the Spec ID EV_NO_ACTION event")
        spec = raw[off : off + size]
        off += size
        (nalgs,) = struct.unpack_from("<I", spec, _SPEC_ID_ALGS_OFFSET)
        sizes: dict[int, int] = {}
        p = _SPEC_ID_ALGS_OFFSET + 4
        for _ in range(min(nalgs, 16)):
            alg, dsize = struct.unpack_from("<HH", spec, p)
            p += 4
            if alg not in ALGORITHMS or ALGORITHMS[alg][2] != dsize:
                raise _fail(f"Spec ID event lists unsupported algorithm {alg:#x}/{dsize}")
            sizes[alg] = dsize
        if nalgs > 16 or p >= len(spec) or p + 1 + spec[p] != len(spec):
            raise _fail("Spec ID event size does not match its contents")
        events: list[CcEvent] = []
        while off + 8 <= len(raw):
            (stop,) = struct.unpack_from("<Q", raw, off)
            if stop in (0, 0xFFFFFFFFFFFFFFFF):
                break
            if len(events) >= MAX_EVENTS:
                raise _fail(f"more than {MAX_EVENTS} events")
            index, etype, count = struct.unpack_from("<III", raw, off)
            off += 12
            if etype not in EVENT_TYPES:
                raise _fail(f"unknown event type {etype:#x}")
            if count > len(sizes):
                raise _fail(f"event has {count} digests, log declares {len(sizes)} algorithms")
            digests = []
            for _ in range(count):
                (alg,) = struct.unpack_from("<H", raw, off)
                if alg not in sizes:
                    raise _fail(f"event digest algorithm {alg:#x} not declared")
                digest = raw[off + 2 : off + 2 + sizes[alg]]
                if len(digest) != sizes[alg]:
                    raise _fail("digest truncated")
                digests.append((alg, digest))
                off += 2 + sizes[alg]
            (dlen,) = struct.unpack_from("<I", raw, off)
            off += 4
            if off + dlen > len(raw):
                raise _fail("event data truncated")
            ev = CcEvent(index, etype, tuple(digests), raw[off : off + dlen])
            ev.details()  # reject malformed structured event data now
            events.append(ev)
            off += dlen
        return cls(tuple(events), tuple(sorted(sizes.items())))

    def replay(self, index: int, alg: int = 0xC) -> bytes:
        """Replay one CC measurement register from zeros (upstream ``replay``)."""
        _name, hname, size = ALGORITHMS[alg]
        mr = bytes(size)
        for ev in self.events:
            if ev.index == index:
                for a, d in ev.digests:
                    if a == alg:
                        mr = hashlib.new(hname, mr + d).digest()
        return mr

    def claims(self) -> list[dict[str, Any]]:
        return [ev.claim() for ev in self.events]
