"""Initdata: parse, validate, digest and bind (pure; guest-and-control-plane.md §1, trustee §4.6).

The digest is ``H(raw TOML bytes)`` with ``H`` the document's own ``algorithm``; there is no
canonical form, so re-serialising changes the digest. Binding to a TEE field truncates or zero-pads
(``fit``); vTPM platforms extend PCR 8 so that ``PCR8 = SHA256(0^32 || digest32)``.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import tomllib
import zlib
from dataclasses import dataclass
from typing import Any

from trustpod.errors import EvidenceError, VerificationError

__all__ = [
    "ANNOTATION_KEY",
    "INITDATA_VERSION",
    "MAX_INITDATA_BYTES",
    "SUPPORTED_ALGORITHMS",
    "InitData",
    "decode_annotation",
    "encode_annotation",
    "extract_policy_data",
    "fit",
    "pcr8_after_extend",
]

INITDATA_VERSION = "0.1.0"
SUPPORTED_ALGORITHMS = ("sha256", "sha384", "sha512")
ANNOTATION_KEY = "io.katacontainers.config.hypervisor.cc_init_data"
#: Upper bound on an initdata document (decoded). Named limit, not a protocol constant.
MAX_INITDATA_BYTES = 256 * 1024
_POLICY_DATA_MARKER = "policy_data := {"


@dataclass(frozen=True, slots=True)
class InitData:
    """A validated initdata document; ``raw`` is the exact text whose digest binds the TEE."""

    raw: bytes
    version: str
    algorithm: str
    data: dict[str, str]

    @classmethod
    def parse(cls, raw: bytes | str, *, max_bytes: int = MAX_INITDATA_BYTES) -> InitData:
        """Parse and validate (version 0.1.0, algorithm sha256/384/512, ``[data]`` of strings)."""
        body = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        if len(body) > max_bytes:
            raise EvidenceError(
                f"initdata is {len(body)} bytes, over the limit of {max_bytes}",
                reason="initdata.too_large",
            )
        try:
            doc = tomllib.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise EvidenceError(
                f"initdata is not valid TOML: {exc}",
                reason="initdata.toml",
                fix="check the initdata file with a TOML linter",
            ) from exc
        version = doc.get("version")
        if version != INITDATA_VERSION:
            raise EvidenceError(
                f"initdata version must be {INITDATA_VERSION!r}, got {version!r}",
                reason="initdata.version",
            )
        algorithm = doc.get("algorithm")
        if algorithm not in SUPPORTED_ALGORITHMS:
            raise EvidenceError(
                f"initdata algorithm must be one of {', '.join(SUPPORTED_ALGORITHMS)}, "
                f"got {algorithm!r}",
                reason="initdata.algorithm",
            )
        data = doc.get("data", {})
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise EvidenceError("initdata [data] must map names to strings", reason="initdata.data")
        unknown = set(doc) - {"version", "algorithm", "data"}
        if unknown:
            raise EvidenceError(
                f"initdata has unknown top-level keys: {sorted(unknown)}",
                reason="initdata.unknown_key",
            )
        return cls(raw=body, version=version, algorithm=str(algorithm), data=dict(data))

    @property
    def digest(self) -> bytes:
        """``algorithm(raw bytes)``."""
        return hashlib.new(self.algorithm, self.raw).digest()

    def claims(self) -> dict[str, Any]:
        """``init_data_claims``: ``[data]`` with aa.toml/cdh.toml as JSON and policy.rego replaced
        by ``agent_policy_claims`` (upstream ``extract_policy_data``)."""
        out: dict[str, Any] = {}
        for key, value in self.data.items():
            if key in ("aa.toml", "cdh.toml"):
                try:
                    out[key] = tomllib.loads(value)
                except tomllib.TOMLDecodeError as exc:
                    raise EvidenceError(
                        f"initdata entry {key!r} is not valid TOML: {exc}",
                        reason="initdata.entry_toml",
                    ) from exc
            elif key == "policy.rego":
                out["agent_policy_claims"] = extract_policy_data(value)
            else:
                out[key] = value
        return out


def extract_policy_data(rego: str) -> Any:
    """JSON of the text after the first ``policy_data := {`` (upstream assumes it comes last).

    Returns ``None`` when the policy has no ``policy_data`` (upstream then emits null)."""
    at = rego.find(_POLICY_DATA_MARKER)
    if at < 0:
        return None
    text = rego[at + len(_POLICY_DATA_MARKER) - 1 :]
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError as exc:
        raise EvidenceError(
            "policy.rego policy_data is not JSON", reason="initdata.policy_data"
        ) from exc
    return value


def fit(digest: bytes, size: int) -> bytes:
    """Truncate to ``size`` or zero-pad at the end (upstream ``regularize_data``/``pad``)."""
    return digest[:size] if len(digest) >= size else digest + b"\0" * (size - len(digest))


def pcr8_after_extend(digest: bytes) -> bytes:
    """PCR 8 after one SHA-256 extend of a fresh PCR with ``digest`` (vTPM platforms).

    Raises:
        VerificationError: the digest is not 32 bytes (vTPM binding needs algorithm sha256).
    """
    if len(digest) != 32:
        raise VerificationError(
            f"initdata digest is {len(digest)} bytes; PCR 8 binding on vTPM platforms needs a "
            "32-byte sha256 digest",
            reason="initdata.pcr8_digest_size",
            fix='set algorithm = "sha256" in the initdata document',
        )
    return hashlib.sha256(b"\0" * 32 + digest).digest()


def encode_annotation(raw: bytes) -> str:
    """``base64(gzip(toml))`` for the ``cc_init_data`` pod annotation (deterministic gzip)."""
    return base64.b64encode(gzip.compress(raw, mtime=0)).decode("ascii")


def decode_annotation(value: str, *, max_bytes: int = MAX_INITDATA_BYTES) -> bytes:
    """Inverse of ``encode_annotation``, bounded to ``max_bytes`` of decompressed output."""
    try:
        packed = base64.b64decode(value.strip().encode("ascii"), validate=True)
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        raw = d.decompress(packed, max_bytes + 1)
    except (binascii.Error, ValueError, UnicodeEncodeError, zlib.error) as exc:
        raise EvidenceError(
            "initdata annotation is not base64(gzip(...))", reason="initdata.annotation"
        ) from exc
    if len(raw) > max_bytes:
        raise EvidenceError(
            "initdata annotation decompresses past the size limit", reason="initdata.too_large"
        )
    return raw
