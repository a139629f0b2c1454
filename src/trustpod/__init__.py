"""trustpod: the Confidential Containers trust stack in Python.

Trustee-compatible key broker (KBS protocol 0.4.0) and attestation service, TEE evidence verifiers,
guest-side attestation agent and confidential data hub, and pod VM image integrity tooling.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
