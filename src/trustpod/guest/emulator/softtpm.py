"""A pure-Python TPM (the ``TpmDevice`` port) for unit tests and benchmarks.

It holds a SHA-256 PCR bank (PCRs 17-22 start at all-ones, like a PC-client TPM / swtpm), NV
indices (capped at swtpm's 2048-byte index size so both back ends behave the same), and RSA-2048
restricted signing keys at persistent handles. ``quote`` builds the TPMS_ATTEST bytes exactly as
a TPM 2.0 does (TPM2_Quote, TPMS_QUOTE_INFO), serialised by ``trustpod.evidence.tpm``, and signs
them RSASSA-PKCS1-v1_5/SHA-256.

Not a TPM: no authorization, no sessions, no hierarchy seeds. Emulation only.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from trustpod.errors import DependencyError
from trustpod.evidence.tpm import (
    ALG_RSA,
    ALG_RSASSA,
    ALG_SHA256,
    PcrSelection,
    TpmsAttest,
    TpmtSignature,
    pcr_digest,
)
from trustpod.guest.attesters.tpm import (
    ALL_PCRS,
    QuoteResult,
    check_extendable_pcr,
    check_sha256_digest,
)

__all__ = ["SOFT_TPM_FIRMWARE_VERSION", "SOFT_TPM_NV_INDEX_MAX", "SoftwareTpm"]

#: swtpm/libtpms 0.9 limit on one NV index (TPM2_PT_NV_INDEX_MAX).
SOFT_TPM_NV_INDEX_MAX = 2048
SOFT_TPM_FIRMWARE_VERSION = 0x2019102300163636
_TPM_ALG_NULL = 0x0010
#: fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign
_AK_ATTRIBUTES = 0x00050072
_DRTM_PCRS = range(17, 23)
_PCR_SELECT_BYTES = 3


def _tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _ak_public_area(key: rsa.RSAPublicKey) -> bytes:
    """Marshalled TPMT_PUBLIC of an RSA-2048 RSASSA-SHA256 restricted signing key."""
    n = key.public_numbers().n.to_bytes(key.key_size // 8, "big")
    return (
        struct.pack(">HHI", ALG_RSA, ALG_SHA256, _AK_ATTRIBUTES)
        + _tpm2b(b"")  # authPolicy
        + struct.pack(">HHHHI", _TPM_ALG_NULL, ALG_RSASSA, ALG_SHA256, 2048, 0)
        + _tpm2b(n)
    )


def _pcr_selection(pcrs: Sequence[int]) -> PcrSelection:
    bitmap = bytearray(_PCR_SELECT_BYTES)
    for i in pcrs:
        bitmap[i // 8] |= 1 << (i % 8)
    return PcrSelection(ALG_SHA256, bytes(bitmap))


class SoftwareTpm:
    """In-memory ``TpmDevice``. Thread-safe; state is lost when the object goes away."""

    def __init__(self, *, nv_index_max: int = SOFT_TPM_NV_INDEX_MAX) -> None:
        self._lock = threading.Lock()
        self._pcrs = [b"\xff" * 32 if i in _DRTM_PCRS else b"\0" * 32 for i in ALL_PCRS]
        self._nv: dict[int, bytearray] = {}
        self._keys: dict[int, rsa.RSAPrivateKey] = {}
        self._nv_index_max = nv_index_max
        self._start = time.monotonic()
        self._reset_count = 0

    # -- NV -------------------------------------------------------------------------------
    def nv_define(self, index: int, size: int) -> None:
        if not 0 < size <= self._nv_index_max:
            raise DependencyError(
                f"NV index size {size} outside 1..{self._nv_index_max}", reason="tpm.nv_define"
            )
        with self._lock:
            self._nv[index] = bytearray(size)

    def nv_write(self, index: int, data: bytes) -> None:
        """Define (or redefine, on a size mismatch) and write, like ``Tpm2PytssDevice``."""
        with self._lock:
            area = self._nv.get(index)
        if area is None or len(area) != len(data):
            self.nv_define(index, len(data))
        with self._lock:
            self._nv[index][:] = data

    def nv_read(self, index: int) -> bytes:
        with self._lock:
            area = self._nv.get(index)
            if area is None:
                raise DependencyError(f"NV index 0x{index:08x} not defined", reason="tpm.nv_read")
            return bytes(area)

    # -- keys -----------------------------------------------------------------------------
    def create_persistent_ak(self, handle: int) -> bytes:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with self._lock:
            if handle in self._keys:
                raise DependencyError(f"handle 0x{handle:08x} in use", reason="tpm.evict_control")
            self._keys[handle] = key
        return self.ak_public_der(handle)

    def _key(self, handle: int) -> rsa.RSAPrivateKey:
        with self._lock:
            key = self._keys.get(handle)
        if key is None:
            raise DependencyError(f"no key at handle 0x{handle:08x}", reason="tpm.ak_handle")
        return key

    def ak_public_der(self, handle: int) -> bytes:
        return (
            self._key(handle)
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    # -- PCRs -----------------------------------------------------------------------------
    def pcr_read(self, pcrs: Sequence[int]) -> list[bytes]:
        with self._lock:
            return [self._pcrs[i] for i in pcrs]

    def pcr_extend(self, index: int, digest: bytes) -> None:
        check_sha256_digest(digest, what="PCR extend digest")
        check_extendable_pcr(index)  # locality 0, like swtpm: PCRs 17-22 answer "bad locality"
        with self._lock:
            self._pcrs[index] = hashlib.sha256(self._pcrs[index] + digest).digest()

    # -- quote ----------------------------------------------------------------------------
    def quote(self, handle: int, pcrs: Sequence[int], nonce: bytes) -> QuoteResult:
        key = self._key(handle)
        if len(nonce) > 64:
            raise DependencyError("qualifying data larger than 64 bytes", reason="tpm.quote")
        values = self.pcr_read(pcrs)
        name = (
            struct.pack(">H", ALG_SHA256)
            + hashlib.sha256(_ak_public_area(key.public_key())).digest()
        )
        attest = TpmsAttest(
            qualified_signer=name,
            extra_data=nonce,
            clock=int((time.monotonic() - self._start) * 1000),
            reset_count=self._reset_count,
            restart_count=0,
            safe=True,
            firmware_version=SOFT_TPM_FIRMWARE_VERSION,
            pcr_select=(_pcr_selection(pcrs),),
            pcr_digest=pcr_digest(values),
        )
        message = attest.to_bytes()
        raw = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        signature = TpmtSignature(ALG_RSASSA, ALG_SHA256, signature=raw).to_bytes()
        return QuoteResult(
            message=message, signature=signature, raw_signature=raw, pcrs=tuple(values)
        )

    def close(self) -> None:
        """Nothing to release."""
