"""TPM 2.0 structures used by quotes: TPMS_ATTEST, TPMT_SIGNATURE, TPM2B_PUBLIC (TCG Part 2).

All integers are big-endian (TPM marshalling). Only what quote verification needs is modelled:

```
TPMS_ATTEST  = magic u32 (0xFF544347) | type u16 (0x8018 quote) | qualifiedSigner TPM2B_NAME
             | extraData TPM2B_DATA | clockInfo (clock u64, resetCount u32, restartCount u32,
               safe u8) | firmwareVersion u64
             | TPMS_QUOTE_INFO: TPML_PCR_SELECTION (count u32, {hash u16, size u8, bitmap})
               pcrDigest TPM2B_DIGEST
TPMT_SIGNATURE = sigAlg u16 | RSASSA/RSAPSS: hash u16, TPM2B sig | ECDSA: hash u16, TPM2B r, TPM2B s
```

Pure: bytes in, frozen dataclasses out, ``EvidenceError`` for anything malformed.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from trustpod.errors import EvidenceError

__all__ = [
    "ALG_ECC",
    "ALG_ECDSA",
    "ALG_RSA",
    "ALG_RSAPSS",
    "ALG_RSASSA",
    "ALG_SHA256",
    "ST_ATTEST_QUOTE",
    "TPM_GENERATED_VALUE",
    "PcrSelection",
    "TpmsAttest",
    "TpmtSignature",
    "pcr_digest",
    "public_key_from_tpm2b_public",
]

TPM_GENERATED_VALUE = 0xFF544347
ST_ATTEST_QUOTE = 0x8018
ALG_RSA, ALG_ECC = 0x0001, 0x0023
ALG_SHA1, ALG_SHA256, ALG_SHA384, ALG_SHA512 = 0x0004, 0x000B, 0x000C, 0x000D
ALG_NULL = 0x0010
ALG_RSASSA, ALG_RSAPSS, ALG_ECDSA = 0x0014, 0x0016, 0x0018
ECC_CURVES: dict[int, ec.EllipticCurve] = {
    0x0003: ec.SECP256R1(),
    0x0004: ec.SECP384R1(),
    0x0005: ec.SECP521R1(),
}
MAX_TPM2B = 4096  #: no TPM2B in a quote is larger (TPM 2.0 MAX_DIGEST_BUFFER/MAX_RSA_KEY_BYTES)
MAX_PCR_BANKS = 16


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise EvidenceError(f"{self.what} is truncated", reason="tpm.truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def tpm2b(self) -> bytes:
        size = self.u16()
        if size > MAX_TPM2B:
            raise EvidenceError(f"{self.what}: TPM2B too large", reason="tpm.size")
        return self.take(size)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise EvidenceError(f"{self.what} has trailing bytes", reason="tpm.trailing")


def _b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


@dataclass(frozen=True, slots=True)
class PcrSelection:
    """One TPMS_PCR_SELECTION: a hash bank and the selected PCR indices."""

    hash_alg: int
    bitmap: bytes

    @property
    def pcrs(self) -> tuple[int, ...]:
        return tuple(i for i in range(len(self.bitmap) * 8) if self.bitmap[i // 8] >> (i % 8) & 1)


@dataclass(frozen=True, slots=True)
class TpmsAttest:
    """A TPMS_ATTEST of type quote."""

    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    pcr_select: tuple[PcrSelection, ...]
    pcr_digest: bytes
    magic: int = TPM_GENERATED_VALUE
    attest_type: int = ST_ATTEST_QUOTE

    @classmethod
    def from_bytes(cls, data: bytes) -> TpmsAttest:
        r = _Reader(bytes(data), "TPMS_ATTEST")
        magic, attest_type = r.u32(), r.u16()
        if magic != TPM_GENERATED_VALUE:
            raise EvidenceError("TPMS_ATTEST magic is not TPM_GENERATED", reason="tpm.magic")
        if attest_type != ST_ATTEST_QUOTE:
            raise EvidenceError("TPM attestation is not a quote", reason="tpm.not_quote")
        signer, extra = r.tpm2b(), r.tpm2b()
        clock, reset, restart, safe = r.u64(), r.u32(), r.u32(), r.u8()
        firmware = r.u64()
        count = r.u32()
        if count > MAX_PCR_BANKS:
            raise EvidenceError("too many PCR selections", reason="tpm.size")
        banks = []
        for _ in range(count):
            alg = r.u16()
            banks.append(PcrSelection(alg, r.take(r.u8())))
        digest = r.tpm2b()
        r.end()
        return cls(signer, extra, clock, reset, restart, bool(safe), firmware, tuple(banks), digest)

    def to_bytes(self) -> bytes:
        out = struct.pack(">IH", self.magic, self.attest_type)
        out += _b(self.qualified_signer) + _b(self.extra_data)
        out += struct.pack(
            ">QIIBQ",
            self.clock,
            self.reset_count,
            self.restart_count,
            int(self.safe),
            self.firmware_version,
        )
        out += struct.pack(">I", len(self.pcr_select))
        for bank in self.pcr_select:
            out += struct.pack(">HB", bank.hash_alg, len(bank.bitmap)) + bank.bitmap
        return out + _b(self.pcr_digest)


@dataclass(frozen=True, slots=True)
class TpmtSignature:
    """A TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA)."""

    sig_alg: int
    hash_alg: int
    signature: bytes = b""  # RSA schemes
    ecdsa_r: bytes = b""
    ecdsa_s: bytes = b""

    @classmethod
    def from_bytes(cls, data: bytes) -> TpmtSignature:
        r = _Reader(bytes(data), "TPMT_SIGNATURE")
        alg, hash_alg = r.u16(), r.u16()
        if alg in (ALG_RSASSA, ALG_RSAPSS):
            sig = cls(alg, hash_alg, signature=r.tpm2b())
        elif alg == ALG_ECDSA:
            sig = cls(alg, hash_alg, ecdsa_r=r.tpm2b(), ecdsa_s=r.tpm2b())
        else:
            raise EvidenceError(
                f"unsupported TPM signature scheme 0x{alg:04x}", reason="tpm.sig_alg"
            )
        r.end()
        return sig

    def to_bytes(self) -> bytes:
        head = struct.pack(">HH", self.sig_alg, self.hash_alg)
        if self.sig_alg == ALG_ECDSA:
            return head + _b(self.ecdsa_r) + _b(self.ecdsa_s)
        return head + _b(self.signature)

    def ecdsa_der(self) -> bytes:
        r, s = int.from_bytes(self.ecdsa_r, "big"), int.from_bytes(self.ecdsa_s, "big")
        return encode_dss_signature(r, s)


def _skip_sym_and_scheme(r: _Reader) -> int:
    sym = r.u16()
    if sym != ALG_NULL:
        r.u16()
        r.u16()
    scheme = r.u16()
    if scheme != ALG_NULL:
        r.u16()
    return scheme


def public_key_from_tpm2b_public(
    data: bytes,
) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """Decode a TPM2B_PUBLIC (RSA or ECC) into a ``cryptography`` public key."""
    outer = _Reader(bytes(data), "TPM2B_PUBLIC")
    r = _Reader(outer.tpm2b(), "TPMT_PUBLIC")
    outer.end()
    key_type = r.u16()
    r.u16()  # nameAlg
    r.u32()  # objectAttributes
    r.tpm2b()  # authPolicy
    try:
        if key_type == ALG_RSA:
            _skip_sym_and_scheme(r)
            r.u16()  # keyBits
            exponent = r.u32() or 65537
            modulus = int.from_bytes(r.tpm2b(), "big")
            r.end()
            return rsa.RSAPublicNumbers(exponent, modulus).public_key()
        if key_type == ALG_ECC:
            _skip_sym_and_scheme(r)
            curve = ECC_CURVES.get(r.u16())
            if r.u16() != ALG_NULL:  # kdf
                r.u16()
            x, y = r.tpm2b(), r.tpm2b()
            r.end()
            if curve is None:
                raise EvidenceError("unsupported ECC curve", reason="tpm.curve")
            nums = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
            )
            return nums.public_key()
    except ValueError as exc:
        raise EvidenceError(f"invalid TPM public key: {exc}", reason="tpm.public_key") from exc
    raise EvidenceError(f"unsupported TPM key type 0x{key_type:04x}", reason="tpm.public_key")


def pcr_digest(pcrs: Sequence[bytes], hash_name: str = "sha256") -> bytes:
    """The quote's pcrDigest: HASH(concatenation of the selected PCR values, in order)."""
    h = hashlib.new(hash_name)
    for value in pcrs:
        h.update(value)
    return h.digest()
