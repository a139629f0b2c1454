"""TPM access port, its tpm2-pytss implementation, and the generic ``tpm`` attester.

``TpmDevice`` is the small port the TPM-based attesters (``tpm``, ``az-snp-vtpm``,
``az-tdx-vtpm``) use. ``Tpm2PytssDevice`` implements it over a TCTI (``device:/dev/tpmrm0`` on a
real machine, ``swtpm:host=127.0.0.1,port=N`` for the emulated CVM); the emulator's pure-Python
``SoftwareTpm`` implements it too, so the attesters run unchanged on both.

Generic ``tpm`` evidence (upstream ``attester/src/tpm``, verifier ``deps/verifier/src/tpm``):
``{"ak_public": b64(DER SPKI), "report_data": b64(nonce), "tpm_quote": {"signature":
b64(TPMT_SIGNATURE), "message": b64(TPMS_ATTEST), "pcrs": [hex SHA-256 x 24]}}`` where the nonce
is the report data zero-padded/truncated to 32 bytes.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from trustpod._internal.b64 import b64_encode
from trustpod.errors import DependencyError, EvidenceError

__all__ = [
    "ALL_PCRS",
    "DEFAULT_TPM_AK_HANDLE",
    "DRTM_PCRS",
    "INIT_DATA_PCR",
    "TPM_REPORT_DATA_SIZE",
    "QuoteResult",
    "Tpm2PytssDevice",
    "TpmAttester",
    "TpmDevice",
    "check_extendable_pcr",
    "check_sha256_digest",
]

_log = logging.getLogger(__name__)

#: Upstream ``AA_TPM_AK_HANDLE`` default for the generic TPM attester.
DEFAULT_TPM_AK_HANDLE = 0x81010002
#: Upstream ``INIT_DATA_PCR`` / ``PCR_SLOT_8``.
INIT_DATA_PCR = 8
#: Quotes cover all 24 SHA-256 PCRs (upstream ``VTPM_QUOTE_PCR_SLOTS`` / ``read_all_pcrs``).
ALL_PCRS: tuple[int, ...] = tuple(range(24))
#: Upstream ``TPM_REPORT_DATA_SIZE`` at the reference snapshot (trustee commit 7c390d7a "tpm:
#: update report data size from 64 to 32 bytes"): the nonce is the report data resized to 32
#: bytes, matching the verifier (trustee-protocol.md §1.5). The older ``tpm_evidence.json``
#: vector predates that change and carries a 64-byte nonce.
TPM_REPORT_DATA_SIZE = 32
_SHA256_SIZE = 32


@dataclass(frozen=True, slots=True)
class QuoteResult:
    """A TPM2_Quote: ``message`` = TPMS_ATTEST bytes, ``signature`` = marshalled TPMT_SIGNATURE,
    ``raw_signature`` = the RSASSA signature bytes alone, ``pcrs`` = SHA-256 values read after."""

    message: bytes
    signature: bytes
    raw_signature: bytes
    pcrs: tuple[bytes, ...]


class TpmDevice(Protocol):
    """Port: the TPM operations the attesters and the emulated paravisor need."""

    def nv_read(self, index: int) -> bytes:
        """Read the whole NV index (owner authorization)."""
        ...

    def nv_write(self, index: int, data: bytes) -> None:
        """Write ``data`` at offset 0, defining the index (owner, ``len(data)``) if missing."""
        ...

    def nv_define(self, index: int, size: int) -> None:
        """(Re)define an owner-read/write NV index of ``size`` bytes."""
        ...

    def ak_public_der(self, handle: int) -> bytes:
        """DER SubjectPublicKeyInfo of the key at persistent ``handle``."""
        ...

    def create_persistent_ak(self, handle: int) -> bytes:
        """Create a restricted RSA-2048 RSASSA-SHA256 signing key, persist it; return its DER."""
        ...

    def quote(self, handle: int, pcrs: Sequence[int], nonce: bytes) -> QuoteResult:
        """TPM2_Quote over SHA-256 ``pcrs`` with ``nonce`` as qualifying data."""
        ...

    def pcr_read(self, pcrs: Sequence[int]) -> list[bytes]:
        """SHA-256 PCR values, in ``pcrs`` order."""
        ...

    def pcr_extend(self, index: int, digest: bytes) -> None:
        """Extend SHA-256 PCR ``index`` with a 32-byte digest."""
        ...

    def close(self) -> None: ...


def check_sha256_digest(digest: bytes, *, what: str) -> bytes:
    """Refuse anything but a 32-byte digest for a SHA-256 PCR extend (upstream
    ``extend_pcr``: "expected sha256 digest")."""
    if len(digest) != _SHA256_SIZE:
        raise EvidenceError(
            f"{what} must be a 32-byte SHA-256 digest, got {len(digest)} bytes: vTPM/TPM "
            "platforms bind it by extending the SHA-256 bank of a PCR, and the verifier checks "
            "PCR == SHA256(0^32 || digest), which only a 32-byte digest can satisfy",
            reason="tpm.digest_size",
            fix='use algorithm = "sha256" in the initdata TOML on TPM/vTPM platforms',
        )
    return digest


#: PC-client DRTM PCRs: only extendable from locality 3/4, never by a guest at locality 0.
DRTM_PCRS = range(17, 23)


def _check_pcr(index: int) -> int:
    if index not in ALL_PCRS:
        raise EvidenceError(f"invalid PCR index {index} (0..23)", reason="tpm.pcr_index")
    return index


def check_extendable_pcr(index: int) -> int:
    """Refuse PCRs a locality-0 guest cannot extend (the TPM would answer "bad locality")."""
    if _check_pcr(index) in DRTM_PCRS:
        raise DependencyError(
            f"PCR {index} is a DRTM PCR (17-22): a TPM only lets locality 3/4 extend it",
            reason="tpm.pcr_locality",
            fix="measure into PCR 16, 23 or 8-15 instead (aa.toml eventlog_config.init_pcr)",
        )
    return index


class TpmAttester:
    """Generic ``tpm`` attester: quote with a persistent AK over PCRs 0-23."""

    tee = "tpm"

    def __init__(self, device: TpmDevice, *, ak_handle: int = DEFAULT_TPM_AK_HANDLE) -> None:
        self._device = device
        self._ak_handle = ak_handle

    def _ak_der(self) -> bytes:
        try:
            return self._device.ak_public_der(self._ak_handle)
        except DependencyError:
            _log.info("no AK at 0x%08x; creating a persistent one", self._ak_handle)
            return self._device.create_persistent_ak(self._ak_handle)

    def get_evidence(self, report_data: bytes) -> Any:
        # (1) upstream resizes report data to TPM_REPORT_DATA_SIZE (pad with zeros / truncate).
        nonce = report_data[:TPM_REPORT_DATA_SIZE].ljust(TPM_REPORT_DATA_SIZE, b"\0")
        ak_der = self._ak_der()
        # (2) quote over all SHA-256 PCRs with the nonce as qualifying data.
        quote = self._device.quote(self._ak_handle, ALL_PCRS, nonce)
        return {
            "report_data": b64_encode(nonce),
            "tpm_quote": {
                "signature": b64_encode(quote.signature),
                "message": b64_encode(quote.message),
                "pcrs": [p.hex() for p in quote.pcrs],
            },
            "ak_public": b64_encode(ak_der),
        }

    def close(self) -> None:
        self._device.close()

    def bind_init_data(self, digest: bytes) -> None:
        # Upstream: extend PCR 8 (PCR_SLOT_8) with the initdata digest (SHA-256 only).
        self._device.pcr_extend(INIT_DATA_PCR, check_sha256_digest(digest, what="initdata digest"))

    def extend_runtime_measurement(self, event_digest: bytes, register_index: int) -> None:
        self._device.pcr_extend(
            check_extendable_pcr(register_index),
            check_sha256_digest(event_digest, what="event digest"),
        )


_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    """Serialise a device method: an ESAPI context is not thread-safe."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_F, wrapper)


class Tpm2PytssDevice:
    """``TpmDevice`` over tpm2-pytss ESAPI and a TCTI string (one connection, kept open).

    swtpm serves one client connection at a time: share one instance per TPM.
    """

    def __init__(self, tcti: str) -> None:
        try:
            from tpm2_pytss import ESAPI
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise DependencyError(
                "tpm2-pytss is not installed", reason="tpm.no_pytss", fix="pip install tpm2-pytss"
            ) from exc
        self.tcti = tcti
        self._lock = threading.RLock()
        try:
            self._ctx: Any = ESAPI(tcti)
        except Exception as exc:
            raise DependencyError(
                f"cannot open the TPM through TCTI {tcti!r}: {exc}",
                reason="tpm.open",
                fix="check the TPM device (/dev/tpmrm0) or the swtpm address",
            ) from exc
        self._nv_chunk = self._property_nv_buffer_max()

    def _property_nv_buffer_max(self) -> int:
        from tpm2_pytss.constants import TPM2_CAP, TPM2_PT_NV

        try:
            _, cap = self._ctx.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT_NV.BUFFER_MAX, 1)
            return int(cap.data.tpmProperties[0].value)
        except Exception:  # fall back to the spec minimum
            return 512

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise DependencyError(f"TPM {what} failed: {exc}", reason=f"tpm.{what}") from exc

    def _exists(self, handle: int) -> bool:
        """Whether an NV index / persistent handle is defined (no ESYS error logging)."""
        from tpm2_pytss.constants import TPM2_CAP

        _, cap = self._call("get_capability", self._ctx.get_capability, TPM2_CAP.HANDLES, handle, 1)
        handles = list(cap.data.handles)
        return bool(handles) and int(handles[0]) == handle

    def _nv_handle(self, index: int) -> Any:
        return self._call("nv_handle", self._ctx.tr_from_tpmpublic, index)

    @_locked
    def nv_read(self, index: int) -> bytes:
        from tpm2_pytss.constants import ESYS_TR

        if not self._exists(index):
            raise DependencyError(f"NV index 0x{index:08x} not defined", reason="tpm.nv_read")
        nv = self._nv_handle(index)
        try:
            pub, _ = self._call("nv_read_public", self._ctx.nv_read_public, nv)
            size = int(pub.nvPublic.dataSize)
            out = bytearray()
            while len(out) < size:
                n = min(self._nv_chunk, size - len(out))
                chunk = self._call(
                    "nv_read", self._ctx.nv_read, nv, n, len(out), auth_handle=ESYS_TR.OWNER
                )
                out += bytes(chunk)
            return bytes(out)
        finally:
            self._ctx.tr_close(nv)

    @_locked
    def nv_define(self, index: int, size: int) -> None:
        from tpm2_pytss import TPM2B_NV_PUBLIC, TPMS_NV_PUBLIC
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_NV

        if self._exists(index):
            old = self._nv_handle(index)
            self._call("nv_undefine", self._ctx.nv_undefine_space, old, ESYS_TR.OWNER)
        attrs = TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD
        public = TPM2B_NV_PUBLIC(
            nvPublic=TPMS_NV_PUBLIC(
                nvIndex=index, nameAlg=TPM2_ALG.SHA256, attributes=attrs, dataSize=size
            )
        )
        nv = self._call("nv_define", self._ctx.nv_define_space, None, public, ESYS_TR.OWNER)
        self._ctx.tr_close(nv)

    @_locked
    def nv_write(self, index: int, data: bytes) -> None:
        # As Azure's tooling (az-cvm-vtpm write_nv_index): define the index when missing,
        # redefine it when its size differs, then write with owner authorization.
        if not self._exists(index) or self._nv_size(index) != len(data):
            self.nv_define(index, len(data))
        from tpm2_pytss.constants import ESYS_TR

        nv = self._nv_handle(index)
        try:
            for off in range(0, len(data), self._nv_chunk):
                part = data[off : off + self._nv_chunk]
                self._call("nv_write", self._ctx.nv_write, nv, part, off, auth_handle=ESYS_TR.OWNER)
        finally:
            self._ctx.tr_close(nv)

    def _nv_size(self, index: int) -> int:
        nv = self._nv_handle(index)
        try:
            pub, _ = self._call("nv_read_public", self._ctx.nv_read_public, nv)
            return int(pub.nvPublic.dataSize)
        finally:
            self._ctx.tr_close(nv)

    @_locked
    def ak_public_der(self, handle: int) -> bytes:
        if not self._exists(handle):
            raise DependencyError(f"no key at handle 0x{handle:08x}", reason="tpm.ak_handle")
        key = self._call("ak_handle", self._ctx.tr_from_tpmpublic, handle)
        try:
            pub, _, _ = self._call("read_public", self._ctx.read_public, key)
            return bytes(pub.to_der())
        finally:
            self._ctx.tr_close(key)

    @_locked
    def create_persistent_ak(self, handle: int) -> bytes:
        from tpm2_pytss import TPM2B_PUBLIC
        from tpm2_pytss.constants import ESYS_TR, TPMA_OBJECT

        attrs = (
            TPMA_OBJECT.RESTRICTED
            | TPMA_OBJECT.SIGN_ENCRYPT
            | TPMA_OBJECT.FIXEDTPM
            | TPMA_OBJECT.FIXEDPARENT
            | TPMA_OBJECT.SENSITIVEDATAORIGIN
            | TPMA_OBJECT.USERWITHAUTH
        )
        template = TPM2B_PUBLIC.parse("rsa2048:rsassa-sha256:null", objectAttributes=attrs)
        key, pub, *_ = self._call(
            "create_ak", self._ctx.create_primary, None, template, ESYS_TR.ENDORSEMENT
        )
        try:
            persistent = self._call(
                "evict_control", self._ctx.evict_control, ESYS_TR.OWNER, key, handle
            )
            self._ctx.tr_close(persistent)
        finally:
            self._ctx.flush_context(key)
        return bytes(pub.to_der())

    @_locked
    def quote(self, handle: int, pcrs: Sequence[int], nonce: bytes) -> QuoteResult:
        from tpm2_pytss import TPMT_SIG_SCHEME
        from tpm2_pytss.constants import TPM2_ALG

        selection = "sha256:" + ",".join(str(_check_pcr(i)) for i in pcrs)
        key = self._call("ak_handle", self._ctx.tr_from_tpmpublic, handle)
        try:
            attest, sig = self._call(
                "quote",
                self._ctx.quote,
                key,
                selection,
                nonce,
                TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
            )
        finally:
            self._ctx.tr_close(key)
        if sig.sigAlg != TPM2_ALG.RSASSA:
            raise DependencyError("the AK did not produce an RSASSA signature", reason="tpm.sig")
        return QuoteResult(
            message=bytes(attest),
            signature=bytes(sig.marshal()),
            raw_signature=bytes(sig.signature.rsassa.sig),
            pcrs=tuple(self.pcr_read(pcrs)),
        )

    @_locked
    def pcr_read(self, pcrs: Sequence[int]) -> list[bytes]:
        out: list[bytes] = []
        wanted = [_check_pcr(i) for i in pcrs]
        # TPML_DIGEST holds at most 8 digests: read in groups of 8.
        for start in range(0, len(wanted), 8):
            group = wanted[start : start + 8]
            _, _, digests = self._call(
                "pcr_read", self._ctx.pcr_read, "sha256:" + ",".join(map(str, group))
            )
            values = [bytes(d) for d in digests]
            if len(values) != len(group):
                raise DependencyError("short PCR read", reason="tpm.pcr_read")
            out += values
        return out

    @_locked
    def pcr_extend(self, index: int, digest: bytes) -> None:
        from tpm2_pytss import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG

        check_sha256_digest(digest, what="PCR extend digest")
        values = TPML_DIGEST_VALUES(
            [TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=digest))]
        )
        pcr = getattr(ESYS_TR, f"PCR{check_extendable_pcr(index)}")
        self._call("pcr_extend", self._ctx.pcr_extend, pcr, values)

    @_locked
    def close(self) -> None:
        try:
            self._ctx.close()
        except Exception:  # noqa: S110 - closing is best effort
            pass
