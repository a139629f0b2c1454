"""One error tree for all of trustpod, grouped by who is at fault.

```
TrustpodError                 base; every error carries a stable ``reason`` code and a ``fix`` hint
├── EvidenceError             the caller sent malformed input (evidence, message, file, URI)
├── VerificationError         a signature, chain, TCB, binding or freshness check failed
├── PolicyDenied              input was valid, but a policy said no
├── NotFoundError             the named thing (resource, policy, reference value) does not exist
├── AuthenticationError       missing/invalid session, token or admin credential
├── DependencyError           a dependency (storage, collateral service, TPM, subprocess) failed
└── ConfigError               configuration is invalid; the message names the key and the file
```

``reason`` is a short dotted machine code (``"snp.signature"``, ``"kbs.nonce_mismatch"``), stable
across releases: metrics, API bodies and tests key on it. ``fix`` is a sentence a person can act
on; the CLI prints it. HTTP status and CLI exit code live in exactly one table next to this
module (``trustpod.error_table``), used by the KBS, the guest API and the CLI; never here.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "DependencyError",
    "EvidenceError",
    "NotFoundError",
    "PolicyDenied",
    "TrustpodError",
    "VerificationError",
]


class TrustpodError(Exception):
    """Base of every error trustpod raises on purpose.

    Args:
        message: what went wrong, for a person (no secrets, no raw evidence).
        reason: stable dotted code; defaults to the class's ``default_reason``.
        fix: optional advice printed by the CLI ("pass --report-data ...").
    """

    default_reason = "error"

    def __init__(self, message: str, *, reason: str | None = None, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.fix = fix

    def diagnostics(self) -> str:
        """Human-readable text: the message, the reason code and the fix when known."""
        text = f"{self.message} [{self.reason}]"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class EvidenceError(TrustpodError):
    """Malformed or unparseable input from the other side (evidence, request body, file)."""

    default_reason = "evidence.malformed"


class VerificationError(TrustpodError):
    """A cryptographic, binding, TCB or freshness check failed."""

    default_reason = "verification.failed"


class PolicyDenied(TrustpodError):
    """Valid input, but a policy decided to deny."""

    default_reason = "policy.denied"


class NotFoundError(TrustpodError):
    """A named resource, policy or reference value does not exist."""

    default_reason = "not_found"


class AuthenticationError(TrustpodError):
    """Missing or invalid session, attestation token or admin credential."""

    default_reason = "auth.failed"


class DependencyError(TrustpodError):
    """A dependency failed (storage, network service, TPM, subprocess); a retry may help."""

    default_reason = "dependency.failed"


class ConfigError(TrustpodError):
    """Invalid configuration; the message names the key and the file."""

    default_reason = "config.invalid"
