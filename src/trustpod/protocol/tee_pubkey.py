"""``TeePubKey``: the guest's ephemeral public key, as a JWK carried in ``runtime-data``.

kbs-types 0.18 ``TeePubKey`` is tagged by ``kty`` (trustee-protocol.md §1.4):
``RSA {alg, n, e}``, ``EC {crv, alg, x, y}``, ``AKP {alg, pub}``. Members outside those are
ignored, as serde does, so the runtime-data digest covers exactly the members upstream hashes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from trustpod._internal.b64 import b64url_decode, b64url_encode
from trustpod.errors import EvidenceError
from trustpod.protocol.constants import BAD_REQUEST

__all__ = ["EC_ALG", "EC_COORDINATE_BYTES", "MAX_RSA_MODULUS_BYTES", "RSA_ALG", "TeePubKey"]

#: Default key-management algorithms per key type (gc ``kbs_protocol/src/keypair.rs``).
EC_ALG = "ECDH-ES+A256KW"
RSA_ALG = "RSA-OAEP-256"

#: Exact coordinate length per curve (RFC 7518 §6.2.1.2: full length, left-padded).
EC_COORDINATE_BYTES: Mapping[str, int] = {"P-256": 32, "P-384": 48, "P-521": 66}
_CURVE_NAMES: Mapping[str, str] = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

#: 16384-bit modulus upper bound; larger keys are refused as a resource-exhaustion guard.
MAX_RSA_MODULUS_BYTES = 2048
MAX_RSA_EXPONENT_BYTES = 8
MAX_AKP_PUB_BYTES = 4096
MAX_ALG_CHARS = 64


def _bad(message: str) -> EvidenceError:
    return EvidenceError(f"tee-pubkey: {message}", reason=BAD_REQUEST)


def _member(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise _bad(f"member {name!r} must be a string")
    return value


def _b64url_len(obj: Mapping[str, Any], name: str, lo: int, hi: int) -> str:
    text = _member(obj, name)
    if len(text) > (hi * 4) // 3 + 4:
        raise _bad(f"member {name!r} is too long")
    raw = b64url_decode(text, field=f"tee-pubkey.{name}")
    if not lo <= len(raw) <= hi:
        raise _bad(f"member {name!r} decodes to {len(raw)} bytes, expected {lo}..{hi}")
    return text


@dataclass(frozen=True, slots=True)
class TeePubKey:
    """A validated TEE public key JWK; string members are kept exactly as received."""

    kty: str
    alg: str
    crv: str = ""
    x: str = ""
    y: str = ""
    n: str = ""
    e: str = ""
    pub: str = ""

    @classmethod
    def from_json(cls, obj: Any) -> TeePubKey:
        """Parse and validate a JWK object; raises ``EvidenceError(reason="kbs.bad_request")``."""
        if not isinstance(obj, Mapping):
            raise _bad("must be a JSON object")
        kty = obj.get("kty")
        alg = _member(obj, "alg")
        if not 0 < len(alg) <= MAX_ALG_CHARS:
            raise _bad("member 'alg' must be 1..64 characters")
        # (1) kty selects the variant (serde internally tagged enum).
        if kty == "EC":
            crv = _member(obj, "crv")
            size = EC_COORDINATE_BYTES.get(crv)
            if size is None:
                raise _bad(f"unsupported curve {crv[:16]!r}")
            x = _b64url_len(obj, "x", size, size)
            y = _b64url_len(obj, "y", size, size)
            return cls(kty="EC", alg=alg, crv=crv, x=x, y=y)
        if kty == "RSA":
            n = _b64url_len(obj, "n", 1, MAX_RSA_MODULUS_BYTES)
            e = _b64url_len(obj, "e", 1, MAX_RSA_EXPONENT_BYTES)
            return cls(kty="RSA", alg=alg, n=n, e=e)
        if kty == "AKP":
            pub = _b64url_len(obj, "pub", 1, MAX_AKP_PUB_BYTES)
            return cls(kty="AKP", alg=alg, pub=pub)
        raise _bad("member 'kty' must be 'EC', 'RSA' or 'AKP'")

    @classmethod
    def from_public_key(
        cls, key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, alg: str | None = None
    ) -> TeePubKey:
        """The JWK of a ``cryptography`` public key (EC: fixed-length coordinates)."""
        if isinstance(key, ec.EllipticCurvePublicKey):
            crv = _CURVE_NAMES.get(key.curve.name)
            if crv is None:
                raise _bad(f"unsupported curve {key.curve.name}")
            size = EC_COORDINATE_BYTES[crv]
            nums = key.public_numbers()
            return cls(
                kty="EC",
                alg=alg or EC_ALG,
                crv=crv,
                x=b64url_encode(nums.x.to_bytes(size, "big")),
                y=b64url_encode(nums.y.to_bytes(size, "big")),
            )
        rnums = key.public_numbers()
        return cls(
            kty="RSA",
            alg=alg or RSA_ALG,
            n=b64url_encode(rnums.n.to_bytes((rnums.n.bit_length() + 7) // 8, "big")),
            e=b64url_encode(rnums.e.to_bytes((rnums.e.bit_length() + 7) // 8, "big")),
        )

    def to_json(self) -> dict[str, str]:
        """The JWK object in kbs-types member order (``kty`` first)."""
        if self.kty == "EC":
            return {"kty": "EC", "crv": self.crv, "alg": self.alg, "x": self.x, "y": self.y}
        if self.kty == "RSA":
            return {"kty": "RSA", "alg": self.alg, "n": self.n, "e": self.e}
        return {"kty": self.kty, "alg": self.alg, "pub": self.pub}
