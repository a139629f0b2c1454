"""Composite attestation: the devices' ``additional_evidence`` next to the primary (CPU) evidence.

Upstream (protocol 0.3.0+, ``kbs/src/attestation/backend.rs`` + ``attestation-service``): the
attestation's ``tee-evidence.additional_evidence`` is a JSON *string* holding a map
``Tee -> evidence`` (``""``: none). Each additional device is verified by the verifier of its TEE
name with the report data ``HASH(JCS({"nonce", "tee-pubkey"}))`` (no ``additional-evidence``
member: the primary evidence already binds the whole string), and each claims set becomes its own
EAR submod (``gpu0``, ``gpu1``, ...) appraised by ``<policy>_<tee_class>``.

Steps:
  (a1) ``""`` -> no devices. Otherwise at most ``max_bytes`` characters of a JSON object whose
       keys are TEE names; duplicate keys, non-objects and more than ``max_devices`` entries are
       refused. The primary TEE may not appear again.
  (a2) Per device: expected report data from the device runtime-data object, verifier by name
       (unknown TEE: refused, fail closed), claims sets kept with their TEE and runtime data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trustpod._internal.jcs import jcs_digest
from trustpod.errors import EvidenceError
from trustpod.protocol.runtime_data import device_runtime_data_object
from trustpod.verifiers.base import TeeClaims, VerifierRegistry, VerifyInput

__all__ = [
    "DEFAULT_MAX_ADDITIONAL_BYTES",
    "DEFAULT_MAX_ADDITIONAL_DEVICES",
    "ClaimSet",
    "parse_additional_evidence",
    "verify_additional",
]

DEFAULT_MAX_ADDITIONAL_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_ADDITIONAL_DEVICES = 8


@dataclass(frozen=True, slots=True)
class ClaimSet:
    """One verified claims set with the TEE that produced it and the runtime data it binds."""

    tee: str
    claims: TeeClaims
    runtime_data: Any


def _bad(msg: str) -> EvidenceError:
    return EvidenceError(f"additional_evidence: {msg}", reason="attestation.additional_evidence")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _bad(f"TEE {k!r} appears twice")
        out[k] = v
    return out


def parse_additional_evidence(
    text: str,
    primary_tee: str,
    *,
    max_bytes: int = DEFAULT_MAX_ADDITIONAL_BYTES,
    max_devices: int = DEFAULT_MAX_ADDITIONAL_DEVICES,
) -> dict[str, Any]:
    """(a1) The ``Tee -> evidence`` map (empty for ``""``)."""
    if not isinstance(text, str):
        raise _bad("must be a JSON string")
    if text == "":
        return {}
    if len(text) > max_bytes:
        raise _bad(f"is {len(text)} characters (limit {max_bytes})")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise _bad(f"is not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise _bad("must be a JSON object mapping TEE names to evidence")
    if len(value) > max_devices:
        raise _bad(f"names {len(value)} TEEs (limit {max_devices})")
    if primary_tee in value:
        raise _bad(f"repeats the primary TEE {primary_tee!r}")
    return value


def verify_additional(
    verifiers: VerifierRegistry,
    additional: Mapping[str, Any],
    runtime_data: Mapping[str, Any],
    expected: VerifyInput,
    hash_algorithm: str = "sha384",
) -> list[ClaimSet]:
    """(a2) Verify every additional device; raises on the first failure."""
    if not additional:
        return []
    nonce, pubkey = runtime_data.get("nonce"), runtime_data.get("tee-pubkey")
    if not isinstance(nonce, str) or not isinstance(pubkey, Mapping):
        raise _bad("needs runtime data with a nonce and a tee-pubkey to bind the devices to")
    device_rd = device_runtime_data_object(nonce, pubkey)
    report_data = jcs_digest(device_rd, hash_algorithm)
    device_expected = VerifyInput(report_data, expected.init_data_digest, expected.now)
    out: list[ClaimSet] = []
    for tee in sorted(additional):
        for claims in verifiers.verify(tee, additional[tee], device_expected):
            out.append(ClaimSet(tee, claims, device_rd))
    return out
