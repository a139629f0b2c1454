"""Protocol constants shared by the KBS server and the guest client (trustee-protocol.md §1)."""

from __future__ import annotations

__all__ = [
    "BAD_REQUEST",
    "DEFAULT_HASH_ALGORITHM",
    "ERROR_TYPE_PREFIX",
    "JWE_DECRYPT",
    "JWE_MALFORMED",
    "JWE_UNSUPPORTED",
    "KNOWN_TEES",
    "MAX_ID_CHARS",
    "PROTOCOL_VERSION",
    "SESSION_COOKIE",
    "SUPPORTED_HASH_ALGORITHMS",
    "VERSION_MISMATCH",
]

#: RCAR protocol version; upstream matches it exactly (``VersionReq::parse("=0.4.0")``, §1.2).
PROTOCOL_VERSION = "0.4.0"

#: kbs-types ``Tee`` serde names (§1.3). The DPU variant's wire name is unverified upstream and
#: is therefore not listed (see docs/compat.md).
KNOWN_TEES: frozenset[str] = frozenset(
    {
        "az-snp-vtpm",
        "az-tdx-vtpm",
        "nvidia",
        "sgx",
        "snp",
        "tdx",
        "cca",
        "csv",
        "se",
        "hygondcu",
        "tpm",
        "sample",
        "sampledevice",
    }
)

#: Session cookie name (``kbs/src/attestation/session.rs``).
SESSION_COOKIE = "kbs-session-id"

#: Hash used for the runtime-data digest when the challenge selects none (gc ``rcar_client.rs``).
DEFAULT_HASH_ALGORITHM = "sha384"

#: Hash algorithms this implementation computes; the client advertises them in ``/auth``.
SUPPORTED_HASH_ALGORITHMS: tuple[str, ...] = ("sha256", "sha384", "sha512")

#: ``ErrorInformation.type`` prefix (``kbs/src/error.rs``); the variant name is appended.
ERROR_TYPE_PREFIX = "https://github.com/confidential-containers/kbs/errors/"

#: Upper bound on short identifier strings (version, tee, alg, crv, nonce) in messages.
MAX_ID_CHARS = 4096

# Stable ``reason=`` codes raised by this package.
BAD_REQUEST = "kbs.bad_request"
VERSION_MISMATCH = "kbs.version_mismatch"
JWE_UNSUPPORTED = "kbs.jwe_unsupported"
JWE_MALFORMED = "kbs.jwe_malformed"
JWE_DECRYPT = "kbs.jwe_decrypt"
