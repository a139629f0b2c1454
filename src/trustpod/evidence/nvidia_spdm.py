"""NVIDIA GPU attestation report: SPDM 1.1 GET_MEASUREMENTS request followed by its response.

Upstream: ``deps/verifier/src/nvidia/{spdm_request,spdm_response,report}.rs``. Layout
(little-endian integers)::

    request  (37 B): version(1)=0x11 code(1)=0xE0 param1(1) param2(1) nonce(32) slot_id(1)
    response       : version(1)=0x11 code(1)=0x60 param1(1) param2(1) num_blocks(1)
                     record_len(3) record(record_len) nonce(32) opaque_len(2) opaque(opaque_len)
                     signature(96 on Hopper: raw r||s, ECDSA P-384)
    record block   : index(1) meas_spec(1)=1 (DMTF) size(2) then value_type(1) value_size(2) value
    opaque item    : type(2) size(2) data(size)

The signed region is every byte before the signature. Parsing is exact: the record must hold
exactly ``num_blocks`` blocks, every block exactly its DMTF value, the opaque area exactly whole
items, block indexes and opaque types unique. After the signature only zero padding of at most
``MAX_TRAILING_ZEROS`` bytes is tolerated (the CoCo CI Hopper report carries one zero byte;
upstream ignores any trailing bytes, see docs/compat.md).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from trustpod.errors import EvidenceError

__all__ = [
    "DMTF_MEASUREMENT_SPEC",
    "HOPPER_SIGNATURE_SIZE",
    "MAX_TRAILING_ZEROS",
    "OPAQUE_TYPES",
    "REQUEST_SIZE",
    "SPDM_GET_MEASUREMENTS",
    "SPDM_MEASUREMENTS",
    "SPDM_NONCE_SIZE",
    "SPDM_VERSION",
    "MeasurementBlock",
    "NvidiaReport",
    "SpdmRequest",
    "SpdmResponse",
    "decode_opaque",
]

SPDM_VERSION = 0x11
SPDM_GET_MEASUREMENTS = 0xE0
SPDM_MEASUREMENTS = 0x60
SPDM_NONCE_SIZE = 32
DMTF_MEASUREMENT_SPEC = 1
HOPPER_SIGNATURE_SIZE = 96
MAX_TRAILING_ZEROS = 16

# Request offsets.
REQUEST_SIZE = 37
_RQ_NONCE = 4
_RQ_SLOT = 36
# Response fixed header.
_RS_NUM_BLOCKS = 4
_RS_RECORD_LEN = 5
_RS_RECORD = 8
_BLOCK_HEADER = 4
_DMTF_HEADER = 3
_OPAQUE_HEADER = 4

#: Opaque data type -> (claim key, decoding) as upstream's ``OpaqueDataType`` (nvtrust names).
OPAQUE_TYPES: MappingProxyType[int, tuple[str, str]] = MappingProxyType(
    {
        1: ("cert_issuer_name", "hex"),
        2: ("cert_authority_key_identifier", "hex"),
        3: ("driver_version", "str"),
        4: ("gpu_info", "hex"),
        5: ("id_sku", "hex"),
        6: ("vbios_version", "vbios"),
        7: ("manufacturer_id", "hex"),
        8: ("tamper_detection", "hex"),
        9: ("smc", "hex"),
        10: ("vpr", "hex"),
        11: ("nvdec0_status", "str"),
        12: ("measurement_count", "u32list"),
        13: ("cpr_info", "hex"),
        14: ("board_id", "hex"),
        15: ("chip_sku", "str"),
        16: ("chip_sku_mod", "str"),
        17: ("project", "str"),
        18: ("project_sku", "str"),
        19: ("project_sku_mod", "hex"),
        20: ("fwid", "hex"),
        21: ("protected_pcie_status", "str"),
        22: ("switch_pdi", "pdi"),
        23: ("floorswept_ports", "hex"),
        24: ("position_id", "hex"),
        25: ("lock_switch_status", "hex"),
        32: ("gpu_link_conn", "hex"),
        33: ("sys_enable_status", "hex"),
        34: ("opaque_data_version", "int"),
        35: ("chip_info", "str"),
        36: ("feature_flag", "feature"),
    }
)
_FEATURES = {0: "SPT", 1: "MPT", 2: "PPCIE"}


def _bad(msg: str) -> EvidenceError:
    return EvidenceError(f"NVIDIA report: {msg}", reason="nvidia.malformed")


_U16 = struct.Struct("<H")
_BLOCK = struct.Struct("<BBHBH")  # index, meas_spec, size, value_type, value_size


def _u16(b: bytes, off: int) -> int:
    return int(_U16.unpack_from(b, off)[0])


@dataclass(frozen=True, slots=True)
class SpdmRequest:
    """GET_MEASUREMENTS request (the verifier's nonce is in here)."""

    version: int
    code: int
    param1: int
    param2: int
    nonce: bytes
    slot_id: int

    @classmethod
    def parse(cls, data: bytes) -> SpdmRequest:
        if len(data) != REQUEST_SIZE:
            raise _bad(f"request is {len(data)} bytes, expected {REQUEST_SIZE}")
        if data[0] != SPDM_VERSION:
            raise _bad(f"SPDM version {data[0]:#04x} not supported (only 0x11)")
        if data[1] != SPDM_GET_MEASUREMENTS:
            raise _bad(f"request code {data[1]:#04x} is not GET_MEASUREMENTS")
        nonce = bytes(data[_RQ_NONCE : _RQ_NONCE + SPDM_NONCE_SIZE])
        return cls(data[0], data[1], data[2], data[3], nonce, data[_RQ_SLOT])


@dataclass(frozen=True, slots=True)
class MeasurementBlock:
    """One DMTF measurement block."""

    index: int
    value_type: int
    value: bytes


def _parse_record(record: bytes, count: int) -> tuple[MeasurementBlock, ...]:
    blocks: list[MeasurementBlock] = []
    seen: set[int] = set()
    off = 0
    end = len(record)
    for _ in range(count):
        if off + _BLOCK_HEADER + _DMTF_HEADER > end:
            raise _bad("measurement block header overruns the record")
        index, spec, size, value_type, value_size = _BLOCK.unpack_from(record, off)
        if spec != DMTF_MEASUREMENT_SPEC:
            raise _bad(f"block {index}: only DMTF measurements are supported")
        start = off + _BLOCK_HEADER
        if start + size > end:
            raise _bad(f"block {index}: measurement overruns the record")
        if value_size + _DMTF_HEADER != size:
            raise _bad(f"block {index}: DMTF value size {value_size} != block size {size} - 3")
        if index in seen:
            raise _bad(f"duplicate measurement block index {index}")
        seen.add(index)
        blocks.append(
            MeasurementBlock(index, value_type, record[start + _DMTF_HEADER : start + size])
        )
        off = start + size
    if off != len(record):
        raise _bad(f"{len(record) - off} bytes after the last measurement block")
    return tuple(blocks)


def _vbios(data: bytes) -> str:
    half = len(data) // 2
    if half == 0 or half >= len(data):
        raise _bad("vbios_version too short")
    return ".".join(f"{b:02x}" for b in reversed(data[:half])) + f".{data[half]:02x}"


def _le_int(data: bytes, key: str) -> int:
    if len(data) > 8:
        raise _bad(f"{key} integer larger than 8 bytes")
    return int.from_bytes(data, "little")


def _decode_item(key: str, kind: str, data: bytes) -> Any:
    if kind == "str":
        return data.decode("utf-8", "replace").rstrip("\0")
    if kind == "vbios":
        return _vbios(data)
    if kind == "u32list":
        if len(data) % 4:
            raise _bad(f"{key} is not a multiple of 4 bytes")
        return {
            str(i + 1): int.from_bytes(data[4 * i : 4 * i + 4], "little")
            for i in range(len(data) // 4)
        }
    if kind == "pdi":
        if len(data) % 8:
            raise _bad(f"{key} is not a multiple of 8 bytes")
        return [data[i : i + 8].hex() for i in range(0, len(data), 8)]
    if kind == "int":
        return _le_int(data, key)
    if kind == "feature":
        return _FEATURES.get(_le_int(data, key), "unknown")
    return data.hex()


def decode_opaque(data: bytes) -> dict[str, Any]:
    """Opaque items -> ``config`` claims (upstream names and encodings)."""
    out: dict[str, Any] = {}
    off = 0
    while off < len(data):
        if off + _OPAQUE_HEADER > len(data):
            raise _bad("opaque item header overruns the opaque data")
        kind_id, size = _u16(data, off), _u16(data, off + 2)
        item = data[off + _OPAQUE_HEADER : off + _OPAQUE_HEADER + size]
        if len(item) != size:
            raise _bad(f"opaque item {kind_id} overruns the opaque data")
        off += _OPAQUE_HEADER + size
        known = OPAQUE_TYPES.get(kind_id)
        if known is None:
            raise _bad(f"invalid opaque data type {kind_id}")
        key, kind = known
        if key in out:
            raise _bad(f"duplicate opaque data type {key}")
        out[key] = _decode_item(key, kind, item)
    if "driver_version" not in out or "vbios_version" not in out:
        raise _bad("both vbios_version and driver_version must be present")
    return out


@dataclass(frozen=True, slots=True)
class SpdmResponse:
    """MEASUREMENTS response, up to (excluding) the signature."""

    version: int
    code: int
    param1: int
    param2: int
    blocks: tuple[MeasurementBlock, ...]
    nonce: bytes
    opaque: bytes
    config: MappingProxyType[str, Any]

    @classmethod
    def parse(cls, data: bytes) -> tuple[SpdmResponse, int]:
        """Parse the response body; returns it and the offset where the signature starts."""
        if len(data) < _RS_RECORD:
            raise _bad("response shorter than its 8-byte header")
        if data[0] != SPDM_VERSION:
            raise _bad(f"SPDM version {data[0]:#04x} not supported (only 0x11)")
        if data[1] != SPDM_MEASUREMENTS:
            raise _bad(f"response code {data[1]:#04x} is not MEASUREMENTS")
        count = data[_RS_NUM_BLOCKS]
        rec_len = int.from_bytes(data[_RS_RECORD_LEN:_RS_RECORD], "little")
        off = _RS_RECORD
        record = data[off : off + rec_len]
        if len(record) != rec_len:
            raise _bad("measurement record overruns the response")
        blocks = _parse_record(record, count)
        off += rec_len
        nonce = data[off : off + SPDM_NONCE_SIZE]
        if len(nonce) != SPDM_NONCE_SIZE:
            raise _bad("response nonce overruns the response")
        off += SPDM_NONCE_SIZE
        if off + 2 > len(data):
            raise _bad("opaque length overruns the response")
        opaque_len = _u16(data, off)
        off += 2
        opaque = data[off : off + opaque_len]
        if len(opaque) != opaque_len:
            raise _bad("opaque data overruns the response")
        off += opaque_len
        config = MappingProxyType(decode_opaque(bytes(opaque)))
        resp = cls(data[0], data[1], data[2], data[3], blocks, bytes(nonce), bytes(opaque), config)
        return resp, off


@dataclass(frozen=True, slots=True)
class NvidiaReport:
    """A parsed report: request, response, the signed bytes and the raw signature."""

    request: SpdmRequest
    response: SpdmResponse
    signed: bytes
    signature: bytes

    @classmethod
    def parse(cls, data: bytes, signature_size: int = HOPPER_SIGNATURE_SIZE) -> NvidiaReport:
        data = bytes(data)
        if len(data) < REQUEST_SIZE:
            raise _bad("attestation report is shorter than the SPDM request")
        request = SpdmRequest.parse(data[:REQUEST_SIZE])
        response, sig_off = SpdmResponse.parse(data[REQUEST_SIZE:])
        end = REQUEST_SIZE + sig_off
        signature = data[end : end + signature_size]
        if len(signature) != signature_size:
            raise _bad(f"signature is {len(signature)} bytes, expected {signature_size}")
        trailing = data[end + signature_size :]
        if len(trailing) > MAX_TRAILING_ZEROS or any(trailing):
            raise _bad(f"{len(trailing)} unexpected bytes after the signature")
        return cls(request, response, bytes(data[:end]), bytes(signature))

    def measurements(self) -> dict[str, str]:
        """``measurements`` claim: block index (decimal string) -> hex value."""
        return {str(b.index): b.value.hex() for b in self.response.blocks}

    def config(self) -> dict[str, Any]:
        """``config`` claim: the decoded opaque data (a fresh copy; values are str, int, a
        flat dict or a flat list)."""
        out: dict[str, Any] = {}
        for k, v in self.response.config.items():
            out[k] = dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v
        return out
