"""An emulated Azure confidential VM (SEV-SNP + vTPM), for local use and tests.

EVERYTHING in this package is emulated: the AMD vendor chain is generated locally and the
evidence it produces only verifies when a verifier is told to trust the emulated root
(``insecure_emulated_roots``). See ``vendor`` (ARK -> ASK -> VCEK), ``tpm`` (TPM back ends:
real swtpm or pure software) and ``cvm`` (``EmulatedAzureCvm``).
"""

from __future__ import annotations

from trustpod.guest.emulator.cvm import CvmProfile, EmulatedAzureCvm
from trustpod.guest.emulator.softtpm import SoftwareTpm
from trustpod.guest.emulator.swtpm import SwtpmProcess, swtpm_binary
from trustpod.guest.emulator.vendor import EmulatedTcb, EmulatedVendor, load_or_create_vendor

__all__ = [
    "CvmProfile",
    "EmulatedAzureCvm",
    "EmulatedTcb",
    "EmulatedVendor",
    "SoftwareTpm",
    "SwtpmProcess",
    "load_or_create_vendor",
    "swtpm_binary",
]
