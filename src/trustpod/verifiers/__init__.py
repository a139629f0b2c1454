"""TEE evidence verifiers (pure cores) and the registry the attestation service dispatches on.

Each verifier module exposes a pure ``verify_*`` function over parsed evidence, collateral, the
expected report_data / initdata digest and ``now``, and a small class implementing ``Verifier``
that gathers collateral through injected ports and calls the pure core.
"""

from trustpod.verifiers.base import (
    TeeClaims,
    Verifier,
    VerifierRegistry,
    VerifierSettings,
    VerifyInput,
)

__all__ = ["TeeClaims", "Verifier", "VerifierRegistry", "VerifierSettings", "VerifyInput"]
