"""A ``PcrExtender`` on a real TPM 2.0 (swtpm, vTPM) through tpm2-pytss."""

from __future__ import annotations

from types import TracebackType

from trustpod.errors import DependencyError

__all__ = ["TpmPcrs"]


class TpmPcrs:
    """Extends / reads SHA-256 PCRs over a TCTI (e.g. ``swtpm:host=127.0.0.1,port=2321``)."""

    def __init__(self, tcti: str) -> None:
        try:
            from tpm2_pytss import ESAPI
        except ImportError as exc:  # pragma: no cover - optional dependency
            raise DependencyError(
                "tpm2-pytss is not installed", reason="image.tpm", fix="pip install tpm2-pytss"
            ) from exc
        try:
            self._ectx = ESAPI(tcti)
        except Exception as exc:
            raise DependencyError(f"cannot open TPM at {tcti}: {exc}", reason="image.tpm") from exc

    def extend(self, pcr: int, digest: bytes) -> None:
        from tpm2_pytss import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG

        if len(digest) != 32:
            raise DependencyError("PCR 11 digests are SHA-256", reason="image.tpm")
        values = TPML_DIGEST_VALUES(
            [TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=digest))]
        )
        self._ectx.pcr_extend(ESYS_TR.parse(f"pcr{pcr}"), values)

    def read(self, pcr: int) -> bytes:
        _, _, digests = self._ectx.pcr_read(f"sha256:{pcr}")
        return bytes(digests[0])

    def close(self) -> None:
        self._ectx.close()

    def __enter__(self) -> TpmPcrs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
