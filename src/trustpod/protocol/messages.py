"""RCAR messages (kbs-types 0.18), parsed once from JSON values with strict shape checks.

Every ``from_json`` accepts an already-decoded JSON value (``json.loads`` output) and raises only
``EvidenceError``: ``reason="kbs.bad_request"`` for a wrong shape and
``reason="kbs.version_mismatch"`` for a protocol version other than exactly 0.4.0 (§1.2).
``to_json`` returns the JSON value to send, members in upstream's order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trustpod.errors import EvidenceError
from trustpod.protocol.constants import (
    BAD_REQUEST,
    DEFAULT_HASH_ALGORITHM,
    ERROR_TYPE_PREFIX,
    KNOWN_TEES,
    MAX_ID_CHARS,
    PROTOCOL_VERSION,
    SUPPORTED_HASH_ALGORITHMS,
    VERSION_MISMATCH,
)
from trustpod.protocol.tee_pubkey import TeePubKey

__all__ = [
    "MAX_INITDATA_BODY_CHARS",
    "MAX_NONCE_CHARS",
    "AttestResponse",
    "Attestation",
    "Challenge",
    "CompositeEvidence",
    "ErrorInformation",
    "InitDataMsg",
    "Request",
    "RuntimeData",
    "TeePubKey",
    "error_type_url",
]

#: Upper bound on ``init-data.body`` (matches ``trustpod.initdata.MAX_INITDATA_BYTES``).
MAX_INITDATA_BODY_CHARS = 256 * 1024
#: Upper bound on a nonce (SE nonces are a JSON-encoded ``SeAttestationRequest``).
MAX_NONCE_CHARS = 64 * 1024


def _bad(message: str) -> EvidenceError:
    return EvidenceError(message, reason=BAD_REQUEST)


def _object(obj: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise _bad(f"{what} must be a JSON object")
    return obj


def _string(obj: Mapping[str, Any], name: str, what: str, limit: int = MAX_ID_CHARS) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise _bad(f"{what}: member {name!r} must be a string")
    if len(value) > limit:
        raise _bad(f"{what}: member {name!r} is longer than {limit} characters")
    return value


def _required(obj: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in obj:
        raise _bad(f"{what}: member {name!r} is missing")
    return obj[name]


def error_type_url(variant: str) -> str:
    """``ErrorInformation.type`` for an upstream error variant, e.g. ``"PolicyDeny"``."""
    return ERROR_TYPE_PREFIX + variant


@dataclass(frozen=True, slots=True)
class Request:
    """``POST /kbs/v0/auth`` body: ``{"version","tee","extra-params"}`` (§1.3)."""

    version: str
    tee: str
    extra_params: Any = ""

    @classmethod
    def from_json(cls, obj: Any) -> Request:
        body = _object(obj, "Request")
        # (1) Shape first (serde), as upstream: unknown tee or missing members are bad requests.
        version = _string(body, "version", "Request")
        tee = _string(body, "tee", "Request")
        if tee not in KNOWN_TEES:
            raise _bad(f"Request: unknown tee {tee[:32]!r}")
        extra = _required(body, "extra-params", "Request")
        # (2) Exact version match (backend.rs VersionReq "=0.4.0"), upstream's message text.
        if version != PROTOCOL_VERSION:
            raise EvidenceError(
                f"KBS Client Protocol Version Mismatch: expect ={PROTOCOL_VERSION} "
                f"while the request is {version[:64]}",
                reason=VERSION_MISMATCH,
                fix=f"use a client speaking KBS protocol {PROTOCOL_VERSION}",
            )
        return cls(version=version, tee=tee, extra_params=extra)

    @property
    def supported_hash_algorithms(self) -> tuple[str, ...]:
        """``extra-params["supported-hash-algorithms"]`` (strings only), empty when absent."""
        if isinstance(self.extra_params, Mapping):
            algs = self.extra_params.get("supported-hash-algorithms")
            if isinstance(algs, list):
                return tuple(a.lower() for a in algs if isinstance(a, str))
        return ()

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "tee": self.tee, "extra-params": self.extra_params}


@dataclass(frozen=True, slots=True)
class Challenge:
    """``/auth`` response: ``{"nonce","extra-params"}``; ``extra-params`` is ``""`` except SE."""

    nonce: str
    extra_params: Any = ""

    @classmethod
    def from_json(cls, obj: Any) -> Challenge:
        body = _object(obj, "Challenge")
        nonce = _string(body, "nonce", "Challenge", MAX_NONCE_CHARS)
        return cls(nonce=nonce, extra_params=_required(body, "extra-params", "Challenge"))

    @property
    def selected_hash_algorithm(self) -> str:
        """``extra-params["selected-hash-algorithm"]`` lower-cased, else sha384 (gc client)."""
        if isinstance(self.extra_params, Mapping):
            alg = self.extra_params.get("selected-hash-algorithm")
            if alg is not None:
                if not isinstance(alg, str) or alg.lower() not in SUPPORTED_HASH_ALGORITHMS:
                    raise EvidenceError(
                        f"Challenge selects unsupported hash algorithm {str(alg)[:16]!r}",
                        reason="kbs.hash_unsupported",
                    )
                return alg.lower()
        return DEFAULT_HASH_ALGORITHM

    def to_json(self) -> dict[str, Any]:
        return {"nonce": self.nonce, "extra-params": self.extra_params}


@dataclass(frozen=True, slots=True)
class InitDataMsg:
    """``init-data``: ``{"format","body"}``; KBS only accepts ``format == "toml"`` (§1.4)."""

    format: str
    body: str

    @classmethod
    def from_json(cls, obj: Any) -> InitDataMsg:
        body = _object(obj, "init-data")
        fmt = _string(body, "format", "init-data", 64)
        text = _string(body, "body", "init-data", MAX_INITDATA_BODY_CHARS)
        return cls(format=fmt, body=text)

    def to_json(self) -> dict[str, str]:
        return {"format": self.format, "body": self.body}


@dataclass(frozen=True, slots=True)
class RuntimeData:
    """``runtime-data``: the challenge nonce and the guest's TEE public key."""

    nonce: str
    tee_pubkey: TeePubKey

    @classmethod
    def from_json(cls, obj: Any) -> RuntimeData:
        body = _object(obj, "runtime-data")
        nonce = _string(body, "nonce", "runtime-data", MAX_NONCE_CHARS)
        key = TeePubKey.from_json(_required(body, "tee-pubkey", "runtime-data"))
        return cls(nonce=nonce, tee_pubkey=key)

    def to_json(self) -> dict[str, Any]:
        return {"nonce": self.nonce, "tee-pubkey": self.tee_pubkey.to_json()}


@dataclass(frozen=True, slots=True)
class CompositeEvidence:
    """``tee-evidence``: TEE-specific ``primary_evidence`` plus a JSON-string device map."""

    primary_evidence: Any
    additional_evidence: str = ""

    @classmethod
    def from_json(cls, obj: Any) -> CompositeEvidence:
        body = _object(obj, "tee-evidence")
        primary = _required(body, "primary_evidence", "tee-evidence")
        additional = body.get("additional_evidence", "")
        if not isinstance(additional, str):
            raise _bad("tee-evidence: member 'additional_evidence' must be a string")
        return cls(primary_evidence=primary, additional_evidence=additional)

    def to_json(self) -> dict[str, Any]:
        return {
            "primary_evidence": self.primary_evidence,
            "additional_evidence": self.additional_evidence,
        }


@dataclass(frozen=True, slots=True)
class Attestation:
    """``POST /kbs/v0/attest`` body (kbs-types 0.18, protocol 0.4.0)."""

    runtime_data: RuntimeData
    tee_evidence: CompositeEvidence
    init_data: InitDataMsg | None = None

    @classmethod
    def from_json(cls, obj: Any) -> Attestation:
        body = _object(obj, "Attestation")
        raw_init = body.get("init-data")
        init = None if raw_init is None else InitDataMsg.from_json(raw_init)
        runtime = RuntimeData.from_json(_required(body, "runtime-data", "Attestation"))
        evidence = CompositeEvidence.from_json(_required(body, "tee-evidence", "Attestation"))
        return cls(runtime_data=runtime, tee_evidence=evidence, init_data=init)

    def to_json(self) -> dict[str, Any]:
        return {
            "init-data": None if self.init_data is None else self.init_data.to_json(),
            "runtime-data": self.runtime_data.to_json(),
            "tee-evidence": self.tee_evidence.to_json(),
        }


@dataclass(frozen=True, slots=True)
class AttestResponse:
    """``/attest`` response ``{"token": "<JWT>"}``."""

    token: str

    @classmethod
    def from_json(cls, obj: Any) -> AttestResponse:
        body = _object(obj, "attest response")
        return cls(token=_string(body, "token", "attest response", 1 << 20))

    def to_json(self) -> dict[str, str]:
        return {"token": self.token}


@dataclass(frozen=True, slots=True)
class ErrorInformation:
    """Error body ``{"type": ERROR_TYPE_PREFIX + Variant, "detail": "..."}`` (§1.8)."""

    type: str
    detail: str

    @classmethod
    def for_variant(cls, variant: str, detail: str) -> ErrorInformation:
        return cls(type=error_type_url(variant), detail=detail)

    @classmethod
    def from_json(cls, obj: Any) -> ErrorInformation:
        body = _object(obj, "ErrorInformation")
        return cls(
            type=_string(body, "type", "ErrorInformation"),
            detail=_string(body, "detail", "ErrorInformation", 1 << 16),
        )

    @property
    def variant(self) -> str:
        """The variant name (``"PolicyDeny"``) or the whole ``type`` if it has no known prefix."""
        return self.type.removeprefix(ERROR_TYPE_PREFIX)

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "detail": self.detail}
