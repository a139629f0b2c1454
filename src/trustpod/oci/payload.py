"""Simple-signing payloads (containers-signature(5)), shared by GPG and cosign signatures (pure).

Parsed as containers/image does (strictly: ``critical`` has exactly ``type``/``image``/
``identity``, each with exactly its one key); ``type`` must be the scheme's value
(``atomic container signature`` for GPG, ``cosign container image signature`` for cosign).
image-rs does not check ``type``; we do (docs/compat.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from trustpod.errors import VerificationError
from trustpod.oci.reference import DIGEST_RE

__all__ = ["COSIGN_TYPE", "SIMPLE_SIGNING_TYPE", "SigningPayload", "parse_payload"]

SIMPLE_SIGNING_TYPE = "atomic container signature"
COSIGN_TYPE = "cosign container image signature"
MAX_PAYLOAD_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SigningPayload:
    type: str
    docker_reference: str
    manifest_digest: str
    optional: dict[str, Any]


def _bad(what: str) -> VerificationError:
    return VerificationError(f"signature payload: {what}", reason="image.signature_payload")


def _exact(obj: Any, keys: set[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _bad(f"{where} is not an object")
    if set(obj) != keys:
        raise _bad(f"{where} must have exactly the keys {sorted(keys)}, has {sorted(obj)}")
    return obj


def parse_payload(raw: bytes, expected_type: str) -> SigningPayload:
    """Parse a payload whose signature already verified; raises ``VerificationError``."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise _bad("too large")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"not JSON ({exc})") from exc
    if (
        not isinstance(doc, dict)
        or "critical" not in doc
        or not set(doc) <= {"critical", "optional"}
    ):
        raise _bad("top level must be {critical, optional}")
    crit = _exact(doc["critical"], {"type", "image", "identity"}, "critical")
    image = _exact(crit["image"], {"docker-manifest-digest"}, "critical.image")
    ident = _exact(crit["identity"], {"docker-reference"}, "critical.identity")
    if crit["type"] != expected_type:
        raise _bad(f"critical.type is {crit['type']!r}, expected {expected_type!r}")
    digest, ref = image["docker-manifest-digest"], ident["docker-reference"]
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise _bad("docker-manifest-digest is not a sha256/sha512 digest")
    if not isinstance(ref, str) or not ref:
        raise _bad("docker-reference is not a non-empty string")
    optional = doc.get("optional")
    if optional is None:
        optional = {}
    if not isinstance(optional, dict):
        raise _bad("optional is not an object")
    return SigningPayload(crit["type"], ref, digest, optional)
