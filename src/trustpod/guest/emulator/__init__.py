"""An emulated Azure confidential VM (SEV-SNP + vTPM), for local use and tests.

EVERYTHING in this package is emulated: the AMD vendor chain is generated locally and the
evidence it produces only verifies when a verifier is told to trust the emulated root
(``insecure_emulated_roots``). See ``vendor`` (ARK -> ASK -> VCEK), ``tpm`` (TPM back ends:
real swtpm or pure software) and ``cvm`` (``EmulatedAzureCvm``).
"""

from __future__ import annotations

__all__: list[str] = []
